"""Export: our training module <-> transformers' DiffusionGemmaForBlockDiffusion (names, weights, files).

Our parameter names are the HF decoder's names without the `model.decoder.` prefix, so the mapping is
a prefix rule. HF ties the encoder's text stack, its final norm and the embeddings to the decoder (and
the LM head to the embeddings); only the decoder has the self-conditioning block; `layer_scalar` is a
buffer that is *not* tied, so the encoder gets its own copy.

    save_hf_checkpoint(model, tokenizer_dir, out_dir, noise="uniform")   # -> a directory
    model = load_hf_checkpoint(out_dir)                                  # -> CanvasLM (fp32)
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch

from ..checkpoint import TRAINED_CARD, TRAINED_GENERATION, write_canvas_card, write_generation_config
from .module import CanvasLM, ModelConfig

DEC = "model.decoder."
ENC = "model.encoder.language_model."
_SHARED = re.compile(r"^(embed_tokens\.weight|norm\.weight|layers\..*)$")  # also live in the encoder
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


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
    from safetensors.torch import load_file
    from transformers import AutoConfig

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


def main(argv: list[str] | None = None) -> None:
    """Export a run directory (e.g. unpacked from a GPU segment's parts) as an HF checkpoint on this machine."""
    import argparse

    from .train import export_run

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
