"""Export: our training module <-> transformers' DiffusionGemmaForBlockDiffusion (names, weights, files).

Our parameter names are the HF decoder's names without the `model.decoder.` prefix, so the mapping is
a prefix rule. HF ties the encoder's text stack, its final norm and the embeddings to the decoder (and
the LM head to the embeddings); only the decoder has the self-conditioning block; `layer_scalar` is a
buffer that is *not* tied, so the encoder gets its own copy.

    save_hf_checkpoint(model, tokenizer_dir, out_dir, noise="uniform")   # -> a directory
    model = load_hf_checkpoint(out_dir)                                  # -> CanvasLM (fp32)

A training run directory's side of it lives here too (train.py imports it; this module never imports
train.py): the bf16 weights a segment brings back (save_weights / load_weights) and export_run, which
turns a run directory (run.json + tokenizer/ + weights) into a checkpoint with its model card.

    python -m canvas_ls.model.training.export --run RUN --out RUN/export
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..checkpoint import TRAINED_CARD, TRAINED_GENERATION, write_canvas_card, write_generation_config
from .module import CanvasLM, ModelConfig

DEC = "model.decoder."
ENC = "model.encoder.language_model."
_SHARED = re.compile(r"^(embed_tokens\.weight|norm\.weight|layers\..*)$")  # also live in the encoder
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def log(msg: str) -> None:
    print(f"[export {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def to_hf_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state_dict -> every text key of the HF model (tied copies included, as the same tensors)."""
    out = {}
    for k, v in sd.items():
        out[DEC + k] = v
        if _SHARED.match(k):
            out[ENC + k] = v
    out["lm_head.weight"] = sd["embed_tokens.weight"]
    return out


def from_hf_state_dict(hf_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF state_dict (or a safetensors key set) -> ours, read from the decoder's keys."""
    out = {k[len(DEC) :]: v for k, v in hf_sd.items() if k.startswith(DEC)}
    if "embed_tokens.weight" not in out and "lm_head.weight" in hf_sd:
        out["embed_tokens.weight"] = hf_sd["lm_head.weight"]
    return out


def build_hf_model(model: CanvasLM, dtype: torch.dtype = torch.float32):
    """A DiffusionGemmaForBlockDiffusion holding `model`'s weights (on the CPU)."""
    # transformers takes seconds to import: only when a checkpoint is built or read
    from transformers import DiffusionGemmaForBlockDiffusion
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    with torch.random.fork_rng():  # the unused vision tower's random init must not move our RNG
        torch.manual_seed(0)
        hf = DiffusionGemmaForBlockDiffusion(model.cfg.to_hf_config())
    sd = {k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()}
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(sd), strict=False)
    missing = [k for k in missing if ".vision_tower." not in k and ".embed_vision." not in k]
    if missing or unexpected:
        raise RuntimeError(f"weights do not map onto the HF model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    hf.tie_weights()
    return hf.to(dtype).eval()


def _bytes(size: str | int) -> int:
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B)\s*", size)
    if not m:
        raise ValueError(f"bad size {size!r}: use e.g. '15MB'")
    unit = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[m.group(2)]
    return int(float(m.group(1)) * unit)


def save_hf_checkpoint(
    model: CanvasLM,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    noise: str,
    shard_size: str | int = "15MB",
    dtype: torch.dtype = torch.bfloat16,
    card: dict | None = None,
) -> Path:
    """Write a checkpoint that `DiffusionGemmaForBlockDiffusion.from_pretrained` and `AutoTokenizer`
    load: safetensors shards of at most `shard_size`, config.json, generation_config.json, the
    tokenizer, and canvas_ls.json (noise kind + training facts from `card`)."""
    if noise not in ("uniform", "absorbing"):
        raise ValueError(f"noise must be 'uniform' or 'absorbing', got {noise!r}")  # before any work
    if dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"unsupported export dtype {dtype}")
    limit = _bytes(shard_size)
    itemsize = torch.empty((), dtype=dtype).element_size()
    for k, v in model.state_dict().items():
        if v.numel() * itemsize > limit:
            raise ValueError(
                f"{k} {tuple(v.shape)} takes {v.numel() * itemsize / 1e6:.1f} MB in {dtype}, more than one "
                f"{shard_size} shard; a tensor cannot be split across shards: lower vocab_size x hidden_size"
            )
    out = Path(out_dir)
    if out.exists():
        for f in list(out.glob("*.safetensors")) + list(out.glob("*.safetensors.index.json")):
            f.unlink()  # a re-export with fewer shards must not leave stale ones behind
    out.mkdir(parents=True, exist_ok=True)

    hf = build_hf_model(model, dtype=dtype)
    hf.save_pretrained(out, max_shard_size=limit)  # config.json + safetensors shards
    write_generation_config(out, model.cfg.canvas_length, TRAINED_GENERATION)
    tok_dir = Path(tokenizer_dir)
    for name in TOKENIZER_FILES:
        if (tok_dir / name).exists():
            shutil.copyfile(tok_dir / name, out / name)
    if not (out / "tokenizer.json").exists():
        raise FileNotFoundError(f"{tok_dir} holds no tokenizer.json")
    write_canvas_card(
        out,
        noise=noise,
        random_weights=False,
        canvas_length=model.cfg.canvas_length,
        extra={**TRAINED_CARD, **(card or {})},
    )
    for f in out.glob("*.safetensors"):
        if f.stat().st_size > limit + 64 * 1024:  # header slack
            raise RuntimeError(f"{f.name} is {f.stat().st_size} bytes, over the {shard_size} shard limit")
    return out


def load_hf_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> CanvasLM:
    """Read an exported checkpoint back into our module (fp32), e.g. to continue training from it."""
    from transformers import AutoConfig  # seconds to import: only here (see build_hf_model)

    p = Path(path)
    cfg = ModelConfig.from_hf_config(AutoConfig.from_pretrained(p))
    hf_sd = {}
    for f in sorted(p.glob("*.safetensors")):
        hf_sd.update(load_file(f))
    sd = {k: v.float() for k, v in from_hf_state_dict(hf_sd).items()}
    model = CanvasLM(cfg, device="cpu")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{p}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.to(device)


def save_weights(run: Path, model: CanvasLM) -> Path:
    """bf16 weights under our names (~2 bytes/parameter): what a segment brings back when the full
    checkpoint (fp32 weights + Adam moments, ~12 bytes/parameter) is too big to carry."""
    sd = {k: v.detach().to("cpu", torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    path = run / "weights.safetensors"
    save_file(
        sd,
        str(path) + ".tmp",
        metadata={"format": "canvas-ls CanvasLM state_dict", "config": json.dumps(model.cfg.to_dict())},
    )
    os.replace(str(path) + ".tmp", path)
    return path


def load_weights(path: Path) -> CanvasLM:
    """A CanvasLM from `save_weights` output, or from an exported HF checkpoint directory."""
    path = Path(path)
    if path.is_dir():
        return load_hf_checkpoint(path)
    with safe_open(str(path), "pt") as f:
        cfg = ModelConfig(**json.loads(f.metadata()["config"]))
    model = CanvasLM(cfg)
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return model


def export_run(
    run: Path, out: Path, *, model: CanvasLM | None = None, dtype: str = "bf16", shard_size: str = "15MB"
) -> Path:
    """HF checkpoint from a run directory (run.json + tokenizer/ + weights or a live model)."""
    info = json.loads((run / "run.json").read_text())
    if model is None:
        model = load_weights(run / "weights.safetensors")
    recipe, st_ = info["recipe"], info["state"]
    card = {
        "trained_by": "canvas_ls.model.training.train",
        "prefix_length": recipe["prefix_len"],
        "objective": info["objective"],
        "recipe": recipe,
        "step": st_["step"],
        "tokens": st_["tokens"],
        "last_eval": st_["last_eval"],
        "data": {k: info["data"][k] for k in ("python", "train_files", "train_tokens", "bytes_per_token")},
    }
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    path = save_hf_checkpoint(
        model.cpu().float(), run / "tokenizer", out, recipe["noise"], shard_size=shard_size, dtype=dt, card=card
    )
    write_model_card(path, card, info["data"], info.get("throughput") or {})
    log(f"exported {path} ({sum(f.stat().st_size for f in path.iterdir()) / 1e6:.1f} MB)")
    return path


def _throughput_line(t: dict) -> str:
    """The model card's line on the measured training speed (what sized the run)."""
    if not t.get("model_tok_s"):
        return "not measured"
    parts = [f"the model {t['model_tok_s'] / 1e3:.0f}K tokens/s"]
    if t.get("pipeline_tok_s_per_worker"):
        parts.append(
            f"the data pipeline {t['pipeline_tok_s_per_worker'] / 1e3:.0f}K tokens/s per worker x {max(1, t.get('workers') or 0)}"
        )
    if t.get("fitted_steps"):
        parts.append(f"the schedule sized from them to {t['fitted_steps']} steps (`--fit-steps`)")
    return "; ".join(parts)


def write_model_card(path: Path, card: dict, data: dict, throughput: dict | None = None) -> None:
    tmpl = Path(__file__).with_name("MODEL_CARD_TEMPLATE.md")
    if not tmpl.exists():
        return
    lic = "\n".join(f"| {k} | {v['files']} | {v['bytes'] / 1e6:.1f} |" for k, v in data["licences"].items())
    ev = card.get("last_eval") or {}
    text = tmpl.read_text().format(
        noise=card["recipe"]["noise"],
        config=card["recipe"]["config"],
        steps=card["step"],
        tokens_m=card["tokens"] / 1e6,
        prefix=card["prefix_length"],
        canvas=card["objective"]["canvas_len"],
        files=data["train_files"],
        train_tokens_m=data["train_tokens"] / 1e6,
        val_diff=ev.get("val_diff_loss", float("nan")),
        val_ar=ev.get("val_ar_loss", float("nan")),
        val_acc=ev.get("val_diff_acc", float("nan")),
        licence_rows=lic,
        python=data.get("python") or "?",
        throughput=_throughput_line(throughput or {}),
    )
    (path / "README.md").write_text(text)


def main(argv: list[str] | None = None) -> None:
    """Export a run directory (e.g. unpacked from a GPU segment's parts) as an HF checkpoint on this machine."""
    ap = argparse.ArgumentParser(prog="python -m canvas_ls.model.training.export", description=main.__doc__)
    ap.add_argument(
        "--run", type=Path, required=True, help="run directory holding run.json, tokenizer/ and weights.safetensors"
    )
    ap.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    ap.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    ap.add_argument("--shard-size", default="15MB")
    a = ap.parse_args(argv)
    export_run(a.run, a.out, dtype=a.dtype, shard_size=a.shard_size)


if __name__ == "__main__":
    main()
