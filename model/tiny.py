"""Build a tiny random-weight DiffusionGemma checkpoint on disk.

Tests and `make demo` (until the bundled model exists) use it to exercise the real loading path:
the real `DiffusionGemmaForBlockDiffusion` class, safetensors, `AutoTokenizer`. Its fills are noise.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from .checkpoint import diffusion_gemma_config, write_canvas_card, write_generation_config
from .tokenizer import save_for_transformers, train_bpe


def _tokenizer_corpus() -> list[str]:
    """A little Python source that exists on every machine: the standard library of this interpreter."""
    import os

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


def build_tiny_checkpoint(out_dir: str | Path, *, noise: str = "uniform", vocab_size: int = 1024, seed: int = 0) -> Path:
    """Write a complete tiny checkpoint directory; returns its path. Deterministic for a given seed."""
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
    write_canvas_card(out, noise=noise, random_weights=True, canvas_length=cfg.canvas_length)
    return out


if __name__ == "__main__":
    print(build_tiny_checkpoint(sys.argv[1] if len(sys.argv) > 1 else "tiny-model"))
