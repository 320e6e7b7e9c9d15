"""Build a tiny random-weight DiffusionGemma checkpoint on disk.

Tests and `make demo` (until the bundled model exists) use it to exercise the real loading path:
the real `DiffusionGemmaForBlockDiffusion` class, safetensors, `AutoTokenizer`. Its fills are noise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from . import special_tokens as st
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
    # Import here: transformers is slow to import and most callers of this module only need paths.
    from transformers import DiffusionGemmaConfig, DiffusionGemmaTextConfig, Gemma4VisionConfig

    text = DiffusionGemmaTextConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        global_head_dim=32,  # defaults to 512, far too big for a toy
        num_global_key_value_heads=1,  # must divide num_attention_heads
        sliding_window=64,
        layer_types=["sliding_attention", "full_attention"],
        num_experts=2,  # every layer has a router, so these three are required
        top_k_experts=1,
        moe_intermediate_size=64,
        max_position_embeddings=8192,
        pad_token_id=st.PAD_ID,
        eos_token_id=st.EOS_ID,
        bos_token_id=st.BOS_ID,
        # 25x the usual 0.02: logits spread out like a trained model's (median entropy ~0.9 nats instead
        # of a flat log(vocab)), so sampler decisions do not hinge on 1e-7 numeric noise in tests.
        initializer_range=0.5,
    )
    # vision_config=None would silently build a full-size vision tower.
    vision = Gemma4VisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1, head_dim=16
    )
    return DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=canvas_length, initializer_range=0.5)


def build_tiny_checkpoint(out_dir: str | Path, *, noise: str = "uniform", vocab_size: int = 1024, seed: int = 0) -> Path:
    """Write a complete tiny checkpoint directory; returns its path. Deterministic for a given seed."""
    from transformers import DiffusionGemmaForBlockDiffusion
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_bpe(_tokenizer_corpus(), vocab_size)
    save_for_transformers(tok, out)
    torch.manual_seed(seed)
    model = DiffusionGemmaForBlockDiffusion(tiny_config(tok.get_vocab_size()))
    model.save_pretrained(out, safe_serialization=True)
    card = {"noise": noise, "mask_token_id": st.MASK_ID if noise == "absorbing" else None, "note": "random weights: fills are noise"}
    (out / "canvas_ls.json").write_text(json.dumps(card, indent=2) + "\n")
    return out


if __name__ == "__main__":
    print(build_tiny_checkpoint(sys.argv[1] if len(sys.argv) > 1 else "tiny-model"))
