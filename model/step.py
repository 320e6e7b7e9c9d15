"""One decoder pass over a canvas: the function the samplers call every step, eager or compiled.

    step = DecoderStep(model, compile="auto")     # eager until warm_up() has compiled it
    logits = step(canvas, sc_logits, keep, cache, positions, masks)     # (batch, canvas, vocab) float32

`decoder_logits` computes exactly what `DiffusionGemmaForBlockDiffusion(decoder_input_ids=..., cache=...,
self_conditioning_logits=..., decoder_position_ids=..., decoder_attention_mask=...)` computes for a
canvas (the same modules, the same operations in the same order: bitwise equal, tested), without the
wrappers torch.compile cannot trace (transformers' output capturing uses a ContextVar), and with the
self-conditioning input zeroed at held positions (`keep` False), as vLLM's `diffusion_pinned` does.

Compilation (`torch.compile(dynamic=True)`: one graph for every prompt length and canvas width) needs a
C++ compiler at run time; it costs 20-80 s the first time on 2 busy cores and much less from its disk
cache (~/.cache/canvas-ls/inductor, TORCHINDUCTOR_CACHE_DIR). `Infiller.warm_up` runs it once, on the
server right after loading, on a thread of its own: fills meanwhile run the eager step, and every fill
after it the compiled one. Without a compiler, or when compilation fails, one log line says so and the
step runs eager.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import warnings
from pathlib import Path

import torch

from .packed_linear import soft_embedding
from .reference import position_statistics
from .threads import on_threads

log = logging.getLogger("canvas_ls.model.step")

COMPILE_CHOICES = ("auto", "on", "off")


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


def decoder_logits(model, canvas, sc_logits, keep, cache, positions, masks, free=None):
    """One decoder pass: logits (B, C, V) float32, soft-capped.

    canvas (B, C) ids; sc_logits (B, C, V) or None (the first step); keep (B, C) bool or None: where the
    self-conditioning input is kept (False at held positions: zeroed); cache: the prompt's read-only
    DynamicCache; positions (B, C); masks: per layer type 4D boolean masks, or None (no padding).
    free (F,) or None: the positions whose rows go through the two vocabulary-wide products (the
    self-conditioning input and the LM head), the compiled step's form (`_compiled_form`); the other
    rows' self-conditioning input is zero and their logits come out 0."""
    dec = model.model.decoder
    embed = dec.embed_tokens
    inputs_embeds = embed(canvas)  # (B, C, H)
    if sc_logits is not None:
        rows = sc_logits if free is None else sc_logits[:, free]  # (B, C or F, V)
        soft = soft_embedding(rows.softmax(dim=-1, dtype=torch.float32).to(embed.weight.dtype), embed)
        soft = soft * embed.embed_scale.to(inputs_embeds.dtype)
        if keep is not None:
            soft = soft * (keep if free is None else keep[:, free])[..., None].to(soft.dtype)
        if free is not None:
            soft = torch.zeros_like(inputs_embeds).index_copy(1, free, soft)  # (B, C, H)
    else:
        soft = torch.zeros_like(inputs_embeds)
    hidden = dec.self_conditioning(inputs_embeds, soft)
    cfg = dec.text_config
    mapping = masks if masks is not None else {"full_attention": None, "sliding_attention": None}
    rope = {t: dec.rotary_emb(hidden, positions, t) for t in dec.unique_layer_types}
    for i, layer in enumerate(dec.layers[: cfg.num_hidden_layers]):
        t = cfg.layer_types[i]
        hidden = layer(
            hidden, position_embeddings=rope[t], attention_mask=mapping[t], position_ids=positions, cache=cache
        )
    hidden = dec.norm(hidden)
    logits = model.lm_head(hidden if free is None else hidden[:, free]).to(torch.float32)  # (B, C or F, V)
    cap = model.final_logit_softcapping
    if cap:
        logits = torch.tanh(logits / cap) * cap
    if free is not None:
        logits = logits.new_zeros(*canvas.shape, logits.shape[-1]).index_copy(1, free, logits)  # (B, C, V)
    return logits


def _compiled_form(model, canvas, sc_logits, weight, free, cache, positions):
    """decoder_logits with every input a tensor, so that one compiled graph serves every step: the
    first step's missing self-conditioning input is zero logits with a zero weight (the same zero
    signal), a step without held positions has a weight of ones. free (F,): the canvas positions that
    are not held. Only their rows go through the two vocabulary-wide products: a held position's
    self-conditioning input is zero whatever its logits, and its logits are never read (they come out
    0). oneDNN computes a row of a product alike whatever rows stand beside it, so the free rows'
    logits are what the whole canvas's product gives them (on a CPU with AMX, the self-conditioning
    product's sum over the vocabulary is blocked by the number of rows: there they agree to bf16
    rounding, as the compiled and eager steps do anyway)."""
    return decoder_logits(model, canvas, sc_logits, weight, cache, positions, None, free=free)


class DecoderStep:
    """The decoder pass of one loaded model: eager until `warm_up` has compiled it, eager for good after
    a compile failure (one log line). The compiled step serves the shapes it was compiled for: one row
    without padding masks (an editor's fill), every prompt length and canvas width; a call it would
    have to recompile for (a batch of several rows, a new dtype) runs eager instead of stalling a fill
    for a recompilation."""

    def __init__(self, model: torch.nn.Module, compile: str = "auto"):
        if compile not in COMPILE_CHOICES:
            raise ValueError(f"compile must be one of {', '.join(COMPILE_CHOICES)}, got {compile!r}")
        self.model = model
        self.compile = compile  # "auto" (the caller decides whether it pays), "on", "off"
        self._compiled = None  # the compiled function, once warm_up has run it successfully
        self._compiled_statistics = None  # the sampler's statistics of a step's logits, compiled beside it
        self._signature = None  # the compiled step's inputs' `_signature`, from warm-up
        # pending | compiling | compiled | eager (why) | off
        self.status = "off" if compile == "off" else "pending"
        self.compile_seconds: float | None = None
        self.compiled_calls = 0
        self.eager_calls = 0

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def wants_compile(self) -> bool:
        return self.compile != "off" and self.status == "pending"

    def __call__(self, canvas, sc_logits, keep, cache, positions, masks):
        fn = self._compiled
        if fn is not None and canvas.shape[0] == 1 and masks is None:
            try:
                sc, weight, free = self._tensor_inputs(canvas, sc_logits, keep)
                skip = _guards_hold(self._signature, canvas, sc, weight, free, cache, positions)
                with _stance(skip_guards=skip):
                    out = fn(self.model, canvas, sc, weight, free, cache, positions)
                self.compiled_calls += 1
                return out
            except Exception as exc:
                if not _is_recompile(exc):  # a broken compiled step: eager from now on
                    self._give_up(f"the compiled decoder step failed ({type(exc).__name__}: {_first_line(exc)})")
        self.eager_calls += 1
        return decoder_logits(self.model, canvas, sc_logits, keep, cache, positions, masks)

    def statistics(self, logits, banned, temperature):
        """`position_statistics` (model/reference.py) of this step's logits: compiled beside the step
        (batches of one and of several rows), eager before warm-up, without compiling, or for a call
        that would recompile."""
        fn = self._compiled_statistics
        if fn is not None:
            try:
                with torch.compiler.set_stance("fail_on_recompile"):
                    return fn(logits, banned, temperature)
            except Exception as exc:
                if not _is_recompile(exc):
                    self._compiled_statistics = None
                    log.warning("the compiled sampler statistics failed (%s): eager from now on", _first_line(exc))
        return position_statistics(logits, banned, temperature)

    def _tensor_inputs(self, canvas, sc_logits, keep):
        """(self-conditioning logits, weight, free positions) for the compiled form (see `_compiled_form`)."""
        dtype = self.model.dtype
        free = torch.arange(canvas.shape[1], device=canvas.device) if keep is None else keep[0].nonzero().squeeze(1)
        if sc_logits is None:  # float32, as the samplers pass them
            vocab = self.model.config.text_config.vocab_size
            sc_logits = torch.zeros(*canvas.shape, vocab, device=canvas.device)
            return sc_logits, torch.zeros(canvas.shape, dtype=dtype, device=canvas.device), free
        if keep is None:
            return sc_logits, torch.ones(canvas.shape, dtype=dtype, device=canvas.device), free
        return sc_logits, keep.to(dtype), free

    def warm_up(self, examples, thread_counts: list[int] | None = None) -> bool:
        """Compile the step and run it on each of `examples` (the arguments of real calls, without the
        model), once per torch thread count in `thread_counts` (default: this thread's): inductor writes
        the count into its kernels, and torch.compile's guards pick the variant of the caller's count.
        Returns whether the compiled step is in use; on failure logs one line and stays eager."""
        if not self.wants_compile():
            return self.compiled
        if self.model.device.type != "cpu":
            self.skip(f"compiled only on a CPU, this is {self.model.device.type}")
            return False
        if cpp_compiler() is None:
            self._give_up("no C++ compiler found (install g++ or clang++, or set CXX)")
            return False
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(compile_cache_dir()))
        t0 = time.perf_counter()
        # Calls meanwhile (from other threads: the warm-up may compile in the background) run eager;
        # the compiled functions are put in place only once they have passed the checks below.
        self.status = "compiling"
        try:
            import torch._dynamo as dynamo
            import torch.fx.experimental._config as fx_config

            dynamo.config.cache_size_limit = max(dynamo.config.cache_size_limit, 16)
            # Tracing transformers' MoE warns that dynamo traces through a functools.lru_cache (a
            # version check): harmless, and on stderr editors such as Neovim file it as an error.
            warnings.filterwarnings("ignore", message="Dynamo detected a call to a `functools.lru_cache`")
            # Module floats (norm eps, scales) as constants: symbolic floats make dynamo trace twice.
            dynamo.config.specialize_float = True
            # No duck sizing: a canvas as wide as a head (32, 64) must not become that constant.
            fx_config.use_duck_shape = False
            fn = torch.compile(_compiled_form, dynamic=True)
            stats = torch.compile(position_statistics, dynamic=True)
            calls = [(n, example) for n in thread_counts or [torch.get_num_threads()] for example in examples]
            signature = None  # the inputs' `_signature` (every example's alike)
            with torch.inference_mode():
                for n, (canvas, sc_logits, keep, cache, positions, _masks) in calls:
                    with on_threads(n):
                        sc, weight, free = self._tensor_inputs(canvas, sc_logits, keep)
                        out = fn(self.model, canvas, sc, weight, free, cache, positions)
                        signature = _signature(canvas, sc, weight, free, cache, positions)
                        if out.shape[:2] != canvas.shape or not bool(torch.isfinite(out).all()):
                            raise RuntimeError("the compiled step returned logits of the wrong shape or not finite")
                        banned = torch.zeros(out.shape[-1], dtype=torch.bool, device=out.device)
                        banned[0] = True
                        t = torch.tensor(0.5, device=out.device)
                        for logits in (out, torch.cat([out, out])):  # one row, and several (length candidates)
                            mine, ref = stats(logits, banned, t), position_statistics(logits, banned, t)
                            # bf16 logits tie often: any id holding the largest value is the argmax
                            at_argmax = ref[0].gather(-1, mine[4][..., None]).squeeze(-1)
                            if not torch.equal(at_argmax, ref[3]):
                                raise RuntimeError("the compiled sampler statistics disagree on the argmax")
        except Exception as exc:
            self._give_up(f"could not compile the decoder step ({type(exc).__name__}: {_first_line(exc)})")
            return False
        self.compile_seconds = time.perf_counter() - t0
        self._compiled = fn
        self._compiled_statistics = stats
        self._signature = signature
        self.status = "compiled"
        log.info("decoder step compiled in %.1f s", self.compile_seconds)
        return True

    def skip(self, why: str) -> None:
        """Not compiling, for a reason that is no problem (the model is too small to gain)."""
        self.status = f"eager ({why})"
        log.info("decoder step not compiled: %s", why)

    def _give_up(self, why: str) -> None:
        self._compiled = self._compiled_statistics = None
        self.status = f"eager ({why})"
        log.warning("%s: the decoder runs eager (slower; compile: off skips trying)", why)


def _signature(canvas, sc_logits, weight, free, cache, positions) -> tuple | None:
    """What torch.compile's guards check of a compiled step's inputs that `_guards_hold` does not:
    each tensor's dtype, device and number of dimensions, the cache's type and layers; None for inputs
    of another kind (the guarded call sorts them out)."""
    layers = getattr(cache, "layers", None)
    if layers is None:
        return None
    tensors = [canvas, sc_logits, weight, free, positions]
    for layer in layers:
        tensors += [getattr(layer, "keys", None), getattr(layer, "values", None)]
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        return None
    return type(cache), tuple(type(layer) for layer in layers), tuple((t.dtype, t.device, t.dim()) for t in tensors)


def _guards_hold(expected: tuple | None, canvas, sc_logits, weight, free, cache, positions) -> bool:
    """Whether every check torch.compile's guards make on the compiled step holds for this call, so that
    they need not run (~0.5-1 ms a call: ~4,500 lines of checks over the model's modules, the cache and
    the inputs). The inputs have the signature of the warm-up's (`expected`: dtypes, devices, dimensions,
    the cache's type and layers), are made under inference mode as there, are contiguous, and every
    size the graph keeps dynamic (canvas width, free positions, each cache layer's length) is at least
    2, as it was compiled for (a size of 1 would be specialised); one row. The rest of what the guards
    check is fixed for a loaded model (its module tree, the attention functions). The torch thread
    count and the model, which tell several compiled variants apart, are still checked: torch's
    skip_guard_eval_unsafe keeps the guards that ever failed."""
    if expected is None or not torch.is_inference_mode_enabled():
        return False
    if canvas.shape[0] != 1 or canvas.shape[1] < 2 or free.shape[0] < 2:
        return False
    if _signature(canvas, sc_logits, weight, free, cache, positions) != expected:
        return False
    tensors = [canvas, sc_logits, weight, free, positions]
    for layer in cache.layers:
        if layer.keys.shape[2] < 2:
            return False
        tensors += [layer.keys, layer.values]
    return all(t.is_contiguous() and t.is_inference() for t in tensors)


def _stance(skip_guards: bool):
    """torch.compile's stance for a compiled step's call: never recompile (a call that would runs
    eager), and with skip_guards only the guards that tell compiled variants apart."""
    if skip_guards:
        try:
            return torch.compiler.set_stance("fail_on_recompile", skip_guard_eval_unsafe=True)
        except TypeError:  # a torch before 2.6: no such flag
            pass
    return torch.compiler.set_stance("fail_on_recompile")


def _is_recompile(exc: BaseException) -> bool:
    """A call the compiled step would have to recompile for (under the fail_on_recompile stance; with
    skip_guard_eval_unsafe, a call none of the guards that tell variants apart admits)."""
    try:
        from torch._dynamo.exc import RecompileError
    except ImportError:  # pragma: no cover
        RecompileError = ()  # noqa: N806
    text = str(exc)
    return isinstance(exc, RecompileError) or "Detected recompile" in text or "Recompilation triggered" in text


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""
