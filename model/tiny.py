"""Build a tiny random-weight DiffusionGemma checkpoint on disk.

Tests (and `make demo` on an install without the bundled model) use it to exercise the real loading path:
the real `DiffusionGemmaForBlockDiffusion` class, safetensors, `AutoTokenizer`. Its fills are noise.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import torch

from .checkpoint import diffusion_gemma_config, write_canvas_card, write_generation_config
from .tokenizer import save_for_transformers, train_bpe

# The tiny model's default sampler (what `sampler: "auto"` means for it).
TINY_SAMPLER = "reference"


def _tokenizer_corpus() -> list[str]:
    """A little Python source that exists on every machine: the standard library of this interpreter."""
    stdlib = Path(os.__file__).parent
    names = ["textwrap.py", "bisect.py", "heapq.py", "functools.py", "string.py", "fnmatch.py", "glob.py", "shlex.py"]
    texts = [(stdlib / n).read_text(encoding="utf-8") for n in names if (stdlib / n).exists()]
    if not texts:  # a stripped interpreter: fall back to our own sources
        texts = [p.read_text(encoding="utf-8") for p in Path(__file__).parent.glob("*.py")]
    return texts


def tiny_config(vocab_size: int, canvas_length: int = 256):
    """The tiny model's transformers config (2 layers x 64, sliding + full attention, 2 experts)."""
    return diffusion_gemma_config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        num_heads=2,
        num_kv_heads=1,
        head_dim=32,
        global_head_dim=32,
        num_global_kv_heads=1,
        sliding_window=64,
        layer_types=["sliding_attention", "full_attention"],
        num_experts=2,
        top_k_experts=1,
        moe_intermediate_size=64,
        canvas_length=canvas_length,
        # 25x the usual 0.02: logits spread out like a trained model's (median entropy ~0.9 nats instead
        # of a flat log(vocab)), so sampler decisions do not hinge on 1e-7 numeric noise in tests.
        initializer_range=0.5,
        compact_vision=False,  # keeps the random weights the tests were written against
    )


def build_tiny_checkpoint(
    out_dir: str | Path,
    *,
    noise: str = "uniform",
    vocab_size: int = 1024,
    seed: int = 0,
    sampler: str = TINY_SAMPLER,
    end_closes_hole: bool = False,
) -> Path:
    """Write a complete tiny checkpoint directory, as published checkpoints are written: config.json
    (with text_config), model.safetensors, generation_config.json (the published sampler configuration),
    tokenizer.json + tokenizer_config.json, and our canvas_ls.json (noise kind, random weights, whether
    end tokens close holes: not for random weights, the default sampler). Returns its path;
    deterministic for a given seed. The one builder of tiny checkpoints: tests build them only here."""
    from transformers import DiffusionGemmaForBlockDiffusion
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_bpe(_tokenizer_corpus(), vocab_size)
    save_for_transformers(tok, out)  # tokenizer.json, tokenizer_config.json
    cfg = tiny_config(tok.get_vocab_size())
    torch.manual_seed(seed)
    model = DiffusionGemmaForBlockDiffusion(cfg)
    model.save_pretrained(out, safe_serialization=True)  # config.json, model.safetensors
    write_generation_config(out, cfg.canvas_length)
    write_canvas_card(
        out,
        noise=noise,
        random_weights=True,
        end_closes_hole=end_closes_hole,
        sampler=sampler,
        canvas_length=cfg.canvas_length,
    )
    return out


def _large_corpus(limit_bytes: int = 4_000_000) -> list[str]:
    """More of the standard library, for a tokenizer with a preset's full vocabulary."""
    texts, size = list(_tokenizer_corpus()), 0
    for path in sorted(Path(os.__file__).parent.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        texts.append(text)
        size += len(text)
        if size > limit_bytes:
            break
    return texts


def build_random_checkpoint(
    out_dir: str | Path, *, preset: str = "small", seed: int = 0, noise: str = "uniform"
) -> Path:
    """A random-weight checkpoint of a training preset's shape (model/training/module.py: "small" is ~46M
    parameters, "compact" the bundled model's 28.7M), written as the training export writes a real one, with a BPE
    tokenizer of the preset's vocabulary. For speed measurements: the weights are random, so fills are
    noise and pass counts are the worst case (nothing is ever confident)."""
    from .training.export import save_hf_checkpoint
    from .training.module import CanvasLM
    from .training.module import preset as make_preset

    out = Path(out_dir)
    cfg = make_preset(preset)
    tok = train_bpe(_large_corpus(), cfg.vocab_size)
    tok_dir = out.with_name(out.name + ".tokenizer")
    save_for_transformers(tok, tok_dir)
    torch.manual_seed(seed)
    model = CanvasLM(cfg, device="cpu")
    save_hf_checkpoint(model, tok_dir, out, noise=noise)
    write_canvas_card(
        out,
        noise=noise,
        random_weights=True,
        end_closes_hole=False,
        sampler=TINY_SAMPLER,
        canvas_length=cfg.canvas_length,
        extra={"preset": preset},
    )

    shutil.rmtree(tok_dir, ignore_errors=True)
    return out


if __name__ == "__main__":
    print(build_tiny_checkpoint(sys.argv[1] if len(sys.argv) > 1 else "tiny-model"))
