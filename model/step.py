"""One decoder pass over a canvas: the function the samplers call every step, eager or compiled.

    step = DecoderStep(model, compile="auto")      # compiled in the background by warm_up()
    logits = step(canvas, sc_logits, keep, cache, positions, masks)      # (batch, canvas, vocab) float32

`decoder_logits` computes exactly what `DiffusionGemmaForBlockDiffusion(decoder_input_ids=..., cache=...,
self_conditioning_logits=..., decoder_position_ids=..., decoder_attention_mask=...)` computes for a
canvas (the same modules, the same operations in the same order: bitwise equal, tested), without the
wrappers torch.compile cannot trace (transformers' output capturing uses a ContextVar), and with the
self-conditioning input zeroed at held positions (`keep` False), as vLLM's `diffusion_pinned` does.

Compilation (`torch.compile(dynamic=True)`: one graph for every prompt length and canvas width) needs a
C++ compiler at run time and costs 15-20 s cold, 2-3 s from its disk cache (under the user's cache
directory). It runs once, in `warm_up`, on the model thread right after loading; a fill before then, or
after any compile failure, runs eager. A failure (no compiler, an inductor error) is logged once and
the step stays eager for good.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path

import torch

log = logging.getLogger("canvas_ls.model.step")

COMPILE_CHOICES = ("auto", "off")


def compile_cache_dir() -> Path:
    """Where inductor keeps compiled kernels between runs: ~/.cache/canvas-ls/inductor (XDG_CACHE_HOME)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "canvas-ls" / "inductor"


def cpp_compiler() -> str | None:
    """The C++ compiler inductor would use on a CPU (its CXX, else c++/g++/clang++), or None."""
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def decoder_logits(model, canvas, sc_logits, keep, cache, positions, masks):
    """One decoder pass: logits (B, C, V) float32, soft-capped.

    canvas (B, C) ids; sc_logits (B, C, V) or None (the first step); keep (B, C) bool or None: where the
    self-conditioning input is kept (False at held positions: zeroed); cache: the prompt's read-only
    DynamicCache; positions (B, C); masks: per layer type 4D boolean masks, or None (no padding)."""
    dec = model.model.decoder
    embed = dec.embed_tokens
    inputs_embeds = embed(canvas)
    if sc_logits is not None:
        soft = torch.matmul(sc_logits.softmax(dim=-1, dtype=torch.float32).to(embed.weight.dtype), embed.weight)
        soft = soft * embed.embed_scale.to(inputs_embeds.dtype)
    else:
        soft = torch.zeros_like(inputs_embeds)
    if keep is not None:
        soft = soft * keep[..., None].to(soft.dtype)
    hidden = dec.self_conditioning(inputs_embeds, soft)
    cfg = dec.text_config
    mapping = masks if masks is not None else {"full_attention": None, "sliding_attention": None}
    rope = {t: dec.rotary_emb(hidden, positions, t) for t in dec.unique_layer_types}
    for i, layer in enumerate(dec.layers[: cfg.num_hidden_layers]):
        t = cfg.layer_types[i]
        hidden = layer(hidden, position_embeddings=rope[t], attention_mask=mapping[t], position_ids=positions, cache=cache)
    hidden = dec.norm(hidden)
    logits = model.lm_head(hidden).to(torch.float32)
    cap = model.final_logit_softcapping
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


class DecoderStep:
    """The decoder pass of one loaded model: eager until `warm_up` has compiled it (compile="auto" on a
    CPU with a C++ compiler), and eager for good after any compile failure (one log line)."""

    def __init__(self, model: torch.nn.Module, compile: str = "auto"):
        if compile not in COMPILE_CHOICES:
            raise ValueError(f"compile must be one of {', '.join(COMPILE_CHOICES)}, got {compile!r}")
        self.model = model
        self.compile = compile
        self._compiled = None  # the compiled function, once warm_up has run it successfully
        self.status = "off" if compile == "off" else "pending"  # pending | compiled | eager (+ why) | off
        self.compile_seconds: float | None = None
        self._lock = threading.Lock()

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def wants_compile(self) -> bool:
        return self.compile == "auto" and self.status == "pending"

    def __call__(self, canvas, sc_logits, keep, cache, positions, masks):
        fn = self._compiled
        if fn is not None:
            try:
                return fn(self.model, canvas, sc_logits, keep, cache, positions, masks)
            except Exception as exc:  # a recompile for a new shape failed: eager from now on
                self._give_up(f"compiled decoder step failed ({type(exc).__name__}: {_first_line(exc)})")
        return decoder_logits(self.model, canvas, sc_logits, keep, cache, positions, masks)

    def warm_up(self, example) -> bool:
        """Compile and run the step once on `example` (the arguments of a real call). Returns whether
        the compiled step is in use; on failure logs one line and stays eager."""
        with self._lock:
            if not self.wants_compile():
                return self.compiled
            if self.model.device.type != "cpu" and self.model.device.type != "cuda":
                self.status = f"eager (no compilation on {self.model.device.type})"
                return False
            if self.model.device.type == "cpu" and cpp_compiler() is None:
                self._give_up("no C++ compiler found (set CXX, or install g++ or clang++)")
                return False
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(compile_cache_dir()))
            t0 = time.perf_counter()
            try:
                import torch._dynamo

                torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 16)
                fn = torch.compile(decoder_logits, dynamic=True)
                with torch.inference_mode():
                    fn(self.model, *example)
            except Exception as exc:
                self._give_up(f"could not compile the decoder step ({type(exc).__name__}: {_first_line(exc)})")
                return False
            self.compile_seconds = time.perf_counter() - t0
            self._compiled = fn
            self.status = "compiled"
            log.info("decoder step compiled in %.1f s", self.compile_seconds)
            return True

    def _give_up(self, why: str) -> None:
        self._compiled = None
        self.status = f"eager ({why})"
        log.warning("%s: running eager (slower; set compile to off to skip trying)", why)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""
