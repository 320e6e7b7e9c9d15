"""Load a local DiffusionGemma checkpoint directory: safetensors only, no remote code, no hub.

A checkpoint directory holds what `save_pretrained` writes for `DiffusionGemmaForBlockDiffusion`
(config.json, *.safetensors), a tokenizer (tokenizer.json + tokenizer_config.json), usually
generation_config.json (the sampler settings the weights were tuned for: `LoadedModel.generation`, the
defaults of every sampler setting left unset), and optionally `canvas_ls.json`, in which checkpoints
built by canvas-ls declare what they were trained for:
{"noise": "absorbing", "mask_token_id": 3, "end_closes_hole": true, "sampler": "reference"}.
Without it: uniform noise, end tokens do not close holes, the reference sampler (as DiffusionGemma).
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from . import default_model_path  # noqa: F401  (re-exported for callers of this module)
from .interface import ModelLoadError
from .packed_linear import pack_linears
from .settings import GenerationDefaults

Noise = Literal["uniform", "absorbing"]


@dataclass
class LoadedModel:
    model: torch.nn.Module  # DiffusionGemmaForBlockDiffusion, eval mode
    tokenizer: object  # PreTrainedTokenizerFast
    path: Path
    device: torch.device
    dtype: torch.dtype
    noise: Noise
    mask_id: int | None
    pad_id: int
    eos_id: int
    bos_id: int | None
    canvas_length: int  # the largest canvas the checkpoint was built for
    vocab_size: int
    random_weights: bool  # a tiny test/demo model: its fills are noise
    trained_prompt_tokens: int | None = None  # canvas_ls.json "prefix_length": longer prompts were never seen
    # generation_config.json's sampler settings: what SamplerSettings fields left at None become
    generation: GenerationDefaults = field(default_factory=GenerationDefaults)
    # canvas_ls.json "end_closes_hole": trained to end a hole's span with <eos> then <pad>, so the model
    # picks the fill's length (one row per fill); otherwise a fill tries batched length candidates
    end_closes_hole: bool = False
    default_sampler: str = "reference"  # canvas_ls.json "sampler": what sampler "auto" means
    # canvas_ls.json "single_line_decoder": what single_line_decoder "auto" takes mid-line with nothing
    # after the cursor (the draft never sees the suffix), when its fills were measured better ("diffusion" or
    # "autoregressive"); None: auto goes by the measured costs alone
    single_line_decoder: str | None = None

    def describe(self) -> str:
        kind = " (random weights: output is noise)" if self.random_weights else ""
        return f"{self.path.name} on {self.device} ({str(self.dtype).removeprefix('torch.')}, {self.noise} noise){kind}"


def resolve_device(setting: str = "auto") -> torch.device:
    if setting in ("", "auto", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(setting)
    except RuntimeError as exc:
        raise ModelLoadError(f"unknown device {setting!r}: use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {setting!r} asked for, but this torch has no CUDA device")
    return device


# float64 is for debugging and exactness tests (batch == one-by-one), never for speed.
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


# CPU "auto" picks bf16 from this hidden size up (and only on a CPU with native bf16). Measured on a
# 2-core AVX512-BF16 CPU, one decoder pass: the 46M "small" preset (hidden 512) 2.0x faster in bf16;
# the tiny test model (hidden 64) 1.4x slower (per-op conversions dominate a model that small).
CPU_BF16_MIN_HIDDEN = 256


def cpu_bf16_native() -> bool:
    """Whether this CPU has bf16 arithmetic (x86: AVX512-BF16 or AMX; Arm: oneDNN's bf16 check).
    Without it bf16 is emulated, and slower than fp32."""
    try:
        import torch.cpu as tcpu

        if tcpu._is_avx512_bf16_supported() or tcpu._is_amx_tile_supported():
            return True
    except (AttributeError, RuntimeError):
        pass
    if platform.machine().lower() in ("arm64", "aarch64"):
        try:
            return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def resolve_dtype(setting: str, device: torch.device, hidden_size: int | None = None) -> torch.dtype:
    """The dtype for a setting. "auto": bf16 on a CUDA device that supports it; on a CPU, bf16 when it
    has native bf16 and the model is big enough to gain (hidden_size >= CPU_BF16_MIN_HIDDEN), else fp32."""
    if setting in ("", "auto", None):
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if device.type == "cpu" and (hidden_size or 0) >= CPU_BF16_MIN_HIDDEN and cpu_bf16_native():
            return torch.bfloat16
        return torch.float32
    if setting not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {setting!r}: use auto, float32, bfloat16, float16 (or float64)")
    return _DTYPES[setting]


def check_model_dir(path: str | os.PathLike) -> list[str]:
    """Everything wrong with a checkpoint directory, as messages; empty when it looks loadable."""
    p = Path(path)
    if not p.exists():
        return [f"model directory {p} does not exist"]
    if not p.is_dir():
        return [f"model path {p} is not a directory"]
    problems = []
    config = p / "config.json"
    if not config.exists():
        problems.append(f"{p} has no config.json")
    else:
        try:
            cfg = json.loads(config.read_text())
            if not isinstance(cfg, dict):
                problems.append(f"{config} must hold a JSON object, not a {type(cfg).__name__}")
            elif cfg.get("model_type") != "diffusion_gemma":
                problems.append(f"{config} has model_type {cfg.get('model_type')!r}, expected 'diffusion_gemma'")
        except (OSError, ValueError) as exc:
            problems.append(f"{config} is not valid JSON: {exc}")
    # Remote code can be asked for by any of the directory's JSON files (tokenizer_config.json too).
    for file in sorted(p.glob("*.json")):
        try:
            meta = json.loads(file.read_text())
        except (OSError, ValueError):
            continue  # config.json's own problems are named above; other files are checked where read
        if isinstance(meta, dict) and meta.get("auto_map"):
            problems.append(f"{file} asks for remote code (auto_map); canvas-ls never runs remote code")
    if not list(p.glob("*.safetensors")):
        extra = " (found .bin weights: convert them to safetensors)" if list(p.glob("*.bin")) else ""
        problems.append(f"{p} has no *.safetensors weights{extra}")
    if not (p / "tokenizer.json").exists():
        problems.append(f"{p} has no tokenizer.json")
    card = p / "canvas_ls.json"
    if card.exists():
        try:
            meta = json.loads(card.read_text())
            if meta.get("noise", "uniform") not in ("uniform", "absorbing"):
                problems.append(f"{card}: noise must be 'uniform' or 'absorbing'")
            if meta.get("sampler", "reference") not in ("reference", "commit"):
                problems.append(f"{card}: sampler must be 'reference' or 'commit'")
            if not isinstance(meta.get("end_closes_hole", False), bool):
                problems.append(f"{card}: end_closes_hole must be true or false")
            if meta.get("single_line_decoder") not in (None, "diffusion", "autoregressive"):
                problems.append(f"{card}: single_line_decoder must be 'diffusion' or 'autoregressive'")
        except ValueError as exc:
            problems.append(f"{card} is not valid JSON: {exc}")
    gen = p / "generation_config.json"
    if gen.exists():
        try:
            GenerationDefaults.from_generation_config(json.loads(gen.read_text()))
        except ValueError as exc:  # bad JSON or a bad value
            problems.append(f"{gen}: {exc}")
    return problems


def load_model(path: str | os.PathLike, device: str = "auto", dtype: str = "auto", *, pack: bool = True) -> LoadedModel:
    """Load a checkpoint for inference. Raises ModelLoadError with every problem found. pack: bf16
    weights on a CPU prepacked for oneDNN (model/packed_linear.py: same products, faster)."""
    problems = check_model_dir(path)
    if problems:
        raise ModelLoadError("; ".join(problems))
    p = Path(path).resolve()
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev, _hidden_size(p))

    from transformers import AutoTokenizer, DiffusionGemmaForBlockDiffusion
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # progress bars would land on the server's stderr log
    try:
        tokenizer = AutoTokenizer.from_pretrained(p, local_files_only=True, trust_remote_code=False)
        model = DiffusionGemmaForBlockDiffusion.from_pretrained(
            p,
            local_files_only=True,
            trust_remote_code=False,
            use_safetensors=True,
            dtype=dt,
            attn_implementation="sdpa",
            # grouped_mm (the default experts kernel) has no float64 path
            **({"experts_implementation": "eager"} if dt == torch.float64 else {}),
        )
    except Exception as exc:  # transformers raises many kinds; the user needs the message
        raise ModelLoadError(f"could not load {p}: {exc}") from exc
    model.to(dev).eval()
    if pack and dev.type == "cpu" and dt == torch.bfloat16:
        pack_linears(model)
    meta = json.loads((p / "canvas_ls.json").read_text()) if (p / "canvas_ls.json").exists() else {}
    text_cfg = model.config.text_config
    noise: Noise = meta.get("noise", "uniform")
    mask_id = meta.get("mask_token_id") if noise == "absorbing" else None
    if noise == "absorbing" and mask_id is None:
        mask_id = tokenizer.mask_token_id
        if mask_id is None:
            raise ModelLoadError(f"{p}/canvas_ls.json declares absorbing noise but names no mask_token_id")
    pad_id = text_cfg.pad_token_id if text_cfg.pad_token_id is not None else tokenizer.pad_token_id
    eos = text_cfg.eos_token_id if text_cfg.eos_token_id is not None else tokenizer.eos_token_id
    eos_id = eos[0] if isinstance(eos, list) else eos
    if pad_id is None or eos_id is None:
        raise ModelLoadError(f"{p}: the config or tokenizer must define pad and eos token ids")
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        path=p,
        device=dev,
        dtype=dt,
        noise=noise,
        mask_id=mask_id,
        pad_id=int(pad_id),
        eos_id=int(eos_id),
        bos_id=text_cfg.bos_token_id,
        canvas_length=int(model.config.canvas_length or 256),
        vocab_size=int(text_cfg.vocab_size),
        random_weights=bool(meta.get("random_weights", False)),
        trained_prompt_tokens=meta.get("prefix_length"),
        generation=read_generation(p),
        end_closes_hole=bool(meta.get("end_closes_hole", False)),
        default_sampler=meta.get("sampler", "reference"),
        single_line_decoder=meta.get("single_line_decoder"),
    )


def _hidden_size(path: Path) -> int | None:
    """config.json's text hidden size (before loading anything: it picks the dtype)."""
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    text = cfg.get("text_config") or cfg
    size = text.get("hidden_size") if isinstance(text, dict) else None
    return size if isinstance(size, int) else None


def read_generation(path: str | os.PathLike) -> GenerationDefaults:
    """The sampler settings in a checkpoint's generation_config.json; the published ones without it."""
    gen = Path(path) / "generation_config.json"
    if not gen.exists():
        return GenerationDefaults()
    return GenerationDefaults.from_generation_config(json.loads(gen.read_text()))
