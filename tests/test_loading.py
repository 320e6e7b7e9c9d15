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
    assert gen == {
        **PUBLISHED_GENERATION,
        "max_new_tokens": 256,
        "bos_token_id": 2,
        "pad_token_id": 0,
        "eos_token_id": 1,
    }
    assert PUBLISHED_GENERATION == {
        "sampler_config": {"_cls_name": "EntropyBoundSamplerConfig", "entropy_bound": 0.1},
        "t_min": 0.4,
        "t_max": 0.8,
        "stability_threshold": 1,
        "confidence_threshold": 0.005,
        "max_denoising_steps": 48,
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
    assert card["end_closes_hole"] is False and card["sampler"] == "reference"  # random weights learned no ends
    cfg = json.loads((tiny_dir / "config.json").read_text())
    assert cfg["model_type"] == "diffusion_gemma" and cfg["text_config"]["vocab_size"] > 0
    assert (tiny_dir / "tokenizer.json").exists() and (tiny_dir / "tokenizer_config.json").exists()


def test_generation_config_and_card_become_the_loaded_defaults(tmp_path, tiny_dir):
    """generation_config.json -> LoadedModel.generation (what unset sampler settings become); canvas_ls.json
    -> whether end tokens close holes and the default sampler; without either, DiffusionGemma's own."""
    from canvas_ls.model.settings import GenerationDefaults, SamplerSettings

    d = tmp_path / "tuned"
    shutil.copytree(tiny_dir, d)
    gen = json.loads((d / "generation_config.json").read_text())
    gen.update(
        max_denoising_steps=12,
        t_min=0.3,
        sampler_config={"_cls_name": "EntropyBoundSamplerConfig", "entropy_bound": 0.2},
        stability_threshold=None,
    )  # null: transformers' default, 1
    (d / "generation_config.json").write_text(json.dumps(gen))
    card = json.loads((d / "canvas_ls.json").read_text())
    card.update(end_closes_hole=True, sampler="commit")
    (d / "canvas_ls.json").write_text(json.dumps(card))
    lm = load_model(d)
    assert lm.generation == GenerationDefaults(
        max_steps=12, entropy_bound=0.2, t_min=0.3, t_max=0.8, stability_threshold=1, confidence_threshold=0.005
    )
    assert lm.end_closes_hole is True and lm.default_sampler == "commit"
    s = SamplerSettings(sampler="reference").resolved(lm.generation, lm.default_sampler)
    assert (s.max_steps, s.entropy_bound, s.temperature_end, s.stability_threshold) == (12, 0.2, 0.3, 1)
    assert SamplerSettings().resolved(lm.generation, lm.default_sampler).sampler == "commit"
    assert SamplerSettings(max_steps=5).resolved(lm.generation).max_steps == 5  # settings override it

    (d / "generation_config.json").unlink()
    (d / "canvas_ls.json").unlink()
    plain = load_model(d)  # a DiffusionGemma checkpoint as published without our metadata
    assert plain.generation == GenerationDefaults() and plain.default_sampler == "reference"
    assert plain.end_closes_hole is False and plain.noise == "uniform"


def test_bad_generation_config_and_card_values_are_named(tmp_path, tiny_dir):
    d = tmp_path / "bad"
    shutil.copytree(tiny_dir, d)
    (d / "generation_config.json").write_text(json.dumps({"max_denoising_steps": 0, "t_min": -1}))
    card = json.loads((d / "canvas_ls.json").read_text())
    card.update(sampler="fast", end_closes_hole="yes")
    (d / "canvas_ls.json").write_text(json.dumps(card))
    problems = " ".join(check_model_dir(d))
    assert "max_denoising_steps" in problems and "t_min" in problems
    assert "sampler must be" in problems and "end_closes_hole" in problems
    with pytest.raises(ModelLoadError, match="max_denoising_steps"):
        load_model(d)


def test_remote_code_is_refused_in_every_file_and_a_non_object_config_is_named(tiny_dir, tmp_path):
    import json
    import shutil

    from canvas_ls.model.loading import check_model_dir

    copy = tmp_path / "model"
    shutil.copytree(tiny_dir, copy)
    meta = json.loads((copy / "tokenizer_config.json").read_text())
    meta["auto_map"] = {"AutoTokenizer": ["tokenization_x.XTokenizer", None]}
    (copy / "tokenizer_config.json").write_text(json.dumps(meta))
    assert any("tokenizer_config.json asks for remote code" in p for p in check_model_dir(copy))
    (copy / "config.json").write_text("[1, 2, 3]")
    assert any("must hold a JSON object, not a list" in p for p in check_model_dir(copy))
