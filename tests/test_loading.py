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
