"""What a canvas-ls checkpoint directory holds besides weights and tokenizer, written in one place.

    config.json             diffusion_gemma_config(...) -> a transformers DiffusionGemmaConfig
    generation_config.json  write_generation_config(out, canvas_length): the published sampler settings
    canvas_ls.json          write_canvas_card(out, noise=..., random_weights=..., end_closes_hole=...,
                            sampler=...): our metadata, what loading.py reads

Used by the tiny random-weight test models (tiny.py: the one builder tests use) and by the training
export (training/export.py), so both write the same files the same way, as published checkpoints are
written (config.json with text_config, generation_config.json with the real sampler configuration,
tokenizer files) plus our canvas_ls.json. Importing this module is cheap: transformers and torch are
imported inside the functions that need them.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import special_tokens as st

SLIDING, FULL = "sliding_attention", "full_attention"

# The sampler configuration published with DiffusionGemma (transformers' own defaults for
# `DiffusionGemmaGenerationConfig`); `_cls_name` is how transformers serialises the sampler dataclass.
PUBLISHED_GENERATION = {
    "sampler_config": {"_cls_name": "EntropyBoundSamplerConfig", "entropy_bound": 0.1},
    "t_min": 0.4,
    "t_max": 0.8,
    "stability_threshold": 1,
    "confidence_threshold": 0.005,
    "max_denoising_steps": 48,
}
# What canvas-ls's own trained exports change (model/training/export.py): the early stop's mean-entropy
# bound. The published 0.005 never let the small bundled model stop before its step limit; 2.0, chosen on
# the development set (benchmarks/dev_tasks.py; 0.005 / 0.3 / 1.0 / 2.0 / 4.0), made its line fills
# better and shorter: similarity 0.338 -> 0.378, empty fills 15% -> 6%, passes 23.5 -> 19.1 a fill.
TRAINED_GENERATION = {"confidence_threshold": 2.0}
# ... and the canvas_ls.json choice they carry: the healed left-to-right draft for a line's rest
# (development set, benchmarks/dev_tasks.py --mid-line: similarity 0.448 against the canvas's 0.334).
TRAINED_CARD = {"single_line_decoder": "autoregressive"}
RANDOM_WEIGHTS_NOTE = "random weights: fills are noise"


def diffusion_gemma_config(
    *,
    vocab_size: int,
    hidden_size: int,
    intermediate_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    global_head_dim: int,
    num_global_kv_heads: int,
    sliding_window: int,
    layer_types: list[str],
    num_experts: int,
    top_k_experts: int,
    moe_intermediate_size: int,
    canvas_length: int = 256,
    rms_norm_eps: float = 1e-6,
    rope_theta_sliding: float = 10_000.0,
    rope_theta_full: float = 1_000_000.0,
    full_partial_rotary_factor: float = 0.25,
    final_logit_softcapping: float = 30.0,
    max_position_embeddings: int = 8192,
    initializer_range: float = 0.02,
    compact_vision: bool = True,
):
    """A text-only `DiffusionGemmaConfig` (the keywords are training's `ModelConfig` fields; the
    defaults are transformers' own). The vision tower it must carry is tiny and never used.

    compact_vision=False keeps transformers' default position table (2 x 10240 x 16, 1.3 MB in fp32: too
    big for a small export shard) and patch size: the tiny test model has always had those, and its
    random weights (so the fills tests see) depend on the random draws the vision tower takes first."""
    # Import here: transformers is slow to import and most importers of this module only write JSON.
    from transformers import DiffusionGemmaConfig, DiffusionGemmaTextConfig, Gemma4VisionConfig

    text = DiffusionGemmaTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=head_dim,
        global_head_dim=global_head_dim,  # transformers defaults this to 512: always set it
        num_global_key_value_heads=num_global_kv_heads,  # must divide num_attention_heads
        sliding_window=sliding_window,
        layer_types=list(layer_types),
        num_experts=num_experts,  # every layer has a router, so these three are required
        top_k_experts=top_k_experts,
        moe_intermediate_size=moe_intermediate_size,
        rms_norm_eps=rms_norm_eps,
        rope_parameters={
            SLIDING: {"rope_type": "default", "rope_theta": rope_theta_sliding},
            FULL: {
                "rope_type": "proportional",
                "partial_rotary_factor": full_partial_rotary_factor,
                "rope_theta": rope_theta_full,
            },
        },
        max_position_embeddings=max_position_embeddings,
        initializer_range=initializer_range,
        pad_token_id=st.PAD_ID,
        eos_token_id=st.EOS_ID,
        bos_token_id=st.BOS_ID,
    )
    text.final_logit_softcapping = final_logit_softcapping  # a plain class attribute in transformers
    # vision_config=None silently builds a full-size vision tower.
    vision = Gemma4VisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        head_dim=16,
        **({"position_embedding_size": 16, "patch_size": 4} if compact_vision else {}),
    )
    return DiffusionGemmaConfig(
        text_config=text, vision_config=vision, canvas_length=canvas_length, initializer_range=initializer_range
    )


def generation_config_dict(canvas_length: int, overrides: dict | None = None) -> dict:
    """generation_config.json's content: the published sampler settings (with `overrides`), one canvas
    per call, our ids."""
    return {
        **PUBLISHED_GENERATION,
        **(overrides or {}),
        "max_new_tokens": canvas_length,
        "bos_token_id": st.BOS_ID,
        "pad_token_id": st.PAD_ID,
        "eos_token_id": st.EOS_ID,
    }


def write_generation_config(out_dir: str | Path, canvas_length: int, overrides: dict | None = None) -> Path:
    """Write generation_config.json (replacing the empty one `save_pretrained` leaves)."""
    path = Path(out_dir) / "generation_config.json"
    path.write_text(json.dumps(generation_config_dict(canvas_length, overrides), indent=2) + "\n")
    return path


def write_canvas_card(
    out_dir: str | Path,
    *,
    noise: str,
    random_weights: bool,
    end_closes_hole: bool = True,
    sampler: str = "reference",
    canvas_length: int | None = None,
    extra: dict | None = None,
) -> Path:
    """Write canvas_ls.json: the noise kind (and <mask> id for absorbing noise), whether the weights are
    random (a test/demo model whose fills are noise), whether end tokens close holes (canvas-ls's
    training data ends every hole's span with <eos> then <pad>, so its checkpoints were trained for it:
    the default), the default sampler ("reference" | "commit": what the `sampler` setting "auto"
    means), the special token ids, and `extra` (training facts such as prefix_length)."""
    if noise not in ("uniform", "absorbing"):
        raise ValueError(f"noise must be 'uniform' or 'absorbing', got {noise!r}")
    if sampler not in ("reference", "commit"):
        raise ValueError(f"sampler must be 'reference' or 'commit', got {sampler!r}")
    card: dict = {
        "noise": noise,
        "mask_token_id": st.MASK_ID if noise == "absorbing" else None,
        "random_weights": bool(random_weights),
        "end_closes_hole": bool(end_closes_hole),
        "sampler": sampler,
        "special_tokens": {"pad": st.PAD_ID, "eos": st.EOS_ID, "bos": st.BOS_ID, "mask": st.MASK_ID},
    }
    if random_weights:
        card["note"] = RANDOM_WEIGHTS_NOTE  # what loading.py read before `random_weights` existed
    if canvas_length is not None:
        card["canvas_length"] = int(canvas_length)
    card.update(extra or {})
    path = Path(out_dir) / "canvas_ls.json"
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path
