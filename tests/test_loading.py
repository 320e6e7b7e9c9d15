"""Loading a checkpoint directory: clear errors that name what is missing."""

from __future__ import annotations

import json
import shutil

import pytest

from canvas_ls.model.loading import ModelLoadError, check_model_dir, load_model


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope")


def test_each_missing_part_is_named(tmp_path, tiny_dir):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    (broken / "tokenizer.json").unlink()
    for f in broken.glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    problems = " ".join(check_model_dir(broken))
    assert "tokenizer.json" in problems
    assert "safetensors" in problems and ".bin" in problems


def test_remote_code_is_refused(tmp_path, tiny_dir):
    d = tmp_path / "remote"
    shutil.copytree(tiny_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_x.X"}
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="remote code"):
        load_model(d)


def test_loads_the_real_class_with_its_tokenizer(tiny):
    assert type(tiny.model).__name__ == "DiffusionGemmaForBlockDiffusion"
    text = "def f(x):\n\treturn x  # ünïcode\n"
    ids = tiny.tokenizer.encode(text, add_special_tokens=False)
    assert tiny.tokenizer.decode(ids) == text
    assert tiny.noise == "uniform" and tiny.mask_id is None
    assert str(tiny.device) == "cpu"


def test_bad_device_and_dtype_are_clear(tiny_dir):
    with pytest.raises(ModelLoadError, match="dtype"):
        load_model(tiny_dir, dtype="float8")
    with pytest.raises(ModelLoadError, match="device"):
        load_model(tiny_dir, device="tpu:9")


def test_checkpoint_files_describe_the_tiny_model(tiny_dir, caplog):
    """generation_config.json holds the published sampler settings and transformers reads it silently;
    canvas_ls.json says the weights are random."""
    import logging
    import warnings

    from transformers import GenerationConfig
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
        DiffusionGemmaGenerationConfig,
        EntropyBoundSamplerConfig,
    )
    from transformers.utils import logging as hf_logging

    from canvas_ls.model.checkpoint import PUBLISHED_GENERATION

    gen = json.loads((tiny_dir / "generation_config.json").read_text())
    assert gen == {**PUBLISHED_GENERATION, "max_new_tokens": 256, "bos_token_id": 2, "pad_token_id": 0, "eos_token_id": 1}
    assert PUBLISHED_GENERATION == {
        "sampler_config": {"_cls_name": "EntropyBoundSamplerConfig", "entropy_bound": 0.1},
        "t_min": 0.4, "t_max": 0.8, "stability_threshold": 1, "confidence_threshold": 0.005, "max_denoising_steps": 48,
    }
    hf_logging.enable_propagation()  # transformers' warnings go through `logging`, so caplog sees them
    try:
        with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="transformers"):
            warnings.simplefilter("error")
            plain = GenerationConfig.from_pretrained(tiny_dir)
            ours = DiffusionGemmaGenerationConfig.from_pretrained(tiny_dir)
    finally:
        hf_logging.disable_propagation()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert plain.t_min == 0.4 and plain.max_new_tokens == 256
    assert ours.sampler_config == EntropyBoundSamplerConfig(entropy_bound=0.1) and ours.max_denoising_steps == 48

    card = json.loads((tiny_dir / "canvas_ls.json").read_text())
    assert card["random_weights"] is True and card["note"].startswith("random weights")
    assert card["noise"] == "uniform" and card["mask_token_id"] is None
