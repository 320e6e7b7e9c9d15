"""Warm-up, the part of the in-process backend that runs once after loading (on a thread of its own,
beside the first fills): compile the decoder step when it pays, and measure what a canvas step and a
left-to-right token cost on this machine (model/costs.py: what `Infiller.choose_decoder` weighs).

What it decides from timings (whether compiling pays, the costs) is kept per model and machine in the
cache directory (model/measured.py): the first server to measure records it, every other server takes
the record, so the load while a server warmed up never changes its choices. With a record, the costs
are in use from the first fill.

Beside fills, each stage waits for a quiet second, but only for WARM_UP_PATIENCE_S after loading: from
then on stages run between fills (each run of a measurement takes the model lock as a fill does, the
compile runs beside them), so that requests sent back to back cannot keep every fill on the eager step
for ever. While the compile traces a graph with torch.fx, fills wait (`_fills_wait_out_fx_traces`).

An object the Infiller holds (`Infiller.warmer`), kept apart from it: none of this is on a fill's path.
It drives the model through `WarmUpHost`, the few things of the Infiller it declares it uses.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from .autoregressive import decode_left_to_right
from .canvas import Row
from .costs import Costs
from .interface import FillRequest, FillResult
from .measured import Measured, cpu_name, model_files
from .settings import SamplerSettings
from .threads import on_threads, use_threads

if TYPE_CHECKING:
    from .autoregressive import LeftToRight
    from .kv import PrefixEncoder
    from .loading import LoadedModel
    from .plan import FillPlan, PlanLimits
    from .step import DecoderStep
    from .threads import ThreadPolicy

log = logging.getLogger("canvas_ls.model.infill")

# compile "auto" compiles the decoder step only when one eager pass on a single-line canvas costs at
# least this much. Measured on 2 CPU cores: compiling saves ~25% of a pass of the 46M "small" model
# (40-60 ms eager in bf16) and ~1 ms of the tiny test model's 2-3 ms, which never repays its compile.
COMPILE_MIN_PASS_S = 0.010
WARM_UP_SWITCH_INTERVAL_S = 0.00002  # the GIL's switch interval while warming up beside fills (start_warm_up)
WARM_UP_QUIET_S = 1.0  # beside fills, each warm-up stage waits until no fill has run for this long ...
# ... for at most this long after loading; then stages run between fills. 10 s of patience, a compile of
# the bundled model from inductor's cache beside fills and the rest of the stages end within a minute.
WARM_UP_PATIENCE_S = 10.0
COST_ATTEMPTS = 3  # costs measured again (up to this many times) when a stall fell on them, before recording
# What warm_up fills to time passes and left-to-right tokens, and compiles the step on.
WARM_TEXT = "import os\n\n\ndef read(path):\n    with open(path) as f:\n        data = \n    return data\n"
WARM_HOLE = WARM_TEXT.index("data = ") + len("data = ")


def _per_unit(
    run: Callable[[int], object], low: int, high: int, repeats: int = 3, lock: threading.RLock | None = None
) -> float:
    """Seconds per unit of run(n): (fastest run(high) - fastest run(low)) / (high - low) over `repeats`
    interleaved tries. What runs at any n (encoding the prompt) cancels; the fastest of each keeps out
    the stalls a busy machine adds. Each run holds `lock` (the model's), so fills come in between."""
    best = {low: math.inf, high: math.inf}
    for _ in range(repeats):
        for n in (low, high):
            with lock if lock is not None else contextlib.nullcontext():
                t = time.perf_counter()
                run(n)
                best[n] = min(best[n], time.perf_counter() - t)
    per_unit = (best[high] - best[low]) / (high - low)
    return per_unit if per_unit > 0 else best[high] / high


@contextlib.contextmanager
def _fills_wait_out_fx_traces(lock: threading.RLock):
    """While this thread compiles, each torch.fx trace it makes holds `lock` (the model's, which every fill
    holds). torch.fx's tracer replaces torch.nn.Module.__call__ and __getattr__ process-wide while it
    traces (torch.fx._symbolic_trace._new_patcher), so a fill calling a module meanwhile on another thread
    lands in the tracer and fails ("module is not installed as a submodule": seen beside a compile, from
    cold caches and from warm ones). With the lock a fill waits for the trace instead."""
    try:
        from torch.fx import _symbolic_trace as fx_trace

        real = fx_trace._new_patcher
    except (ImportError, AttributeError):  # another torch: nothing known to wrap
        yield
        return
    compiling = threading.get_ident()

    @contextlib.contextmanager
    def patcher():
        with lock if threading.get_ident() == compiling else contextlib.nullcontext(), real() as patches:
            yield patches

    fx_trace._new_patcher = patcher
    try:
        yield
    finally:
        fx_trace._new_patcher = real


@dataclass
class FillActivity:
    """What a background warm-up watches of the fills beside it, and the host's life."""

    filling: bool = False  # a caller's fill is running (warm-up's own fills do not count)
    last_fill_end: float = -math.inf  # time.monotonic() when the last caller's fill ended
    closed: bool = False  # the host dropped this model: a background warm-up stops at its next stage
    warming_up: bool = False  # a background warm-up (WarmUp.start) is running


class WarmUpHost(Protocol):
    """What the warm-up uses of the in-process model it warms (the Infiller)."""

    loaded: LoadedModel
    max_prompt_tokens: int
    step: DecoderStep  # compiled here when that pays
    threads: ThreadPolicy
    model_lock: threading.RLock  # held by every fill and by each measurement
    activity: FillActivity
    costs: Costs  # replaced, all at once, by what the warm-up measured
    prefix: PrefixEncoder
    draft: LeftToRight

    def fill_canvas(self, requests: list[FillRequest]) -> list[FillResult]: ...  # the model lock held
    def plan(self, request: FillRequest, settings: SamplerSettings) -> FillPlan: ...
    def limits(self, settings: SamplerSettings) -> PlanLimits: ...
    def prompt_ids(self, prefix: str) -> list[int]: ...
    def step_inputs(self, rows: list[Row]) -> tuple: ...


class WarmUp:
    """The Infiller's warm-up (model/infill.py): `run` it, or `start` it on a thread of its own."""

    def __init__(self, host: WarmUpHost, measured_dir: Path | None = None):
        self.host = host
        self.measured_dir = measured_dir  # where the records are kept; None: model/measured.py's default
        self.patient_until = math.inf  # beside fills: stages wait for a quiet moment until then (`start`)
        self.from_record: list[str] = []  # what the record gave this server ("compile", "costs")

    def record(self, settings: SamplerSettings) -> Measured:
        """The record of this model, as loaded, on this machine, with these calibration settings."""
        host, loaded = self.host, self.host.loaded
        key = {
            "model": str(Path(loaded.path).resolve()),
            "files": model_files(Path(loaded.path)),
            "dtype": str(loaded.dtype),
            "device": str(loaded.device),
            "canvas_length": loaded.canvas_length,
            "max_prompt_tokens": host.max_prompt_tokens,
            "compile": host.step.compile,
            "threads": host.threads.counts(),
            "settings": repr(settings),
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "machine": platform.machine(),
            "torch": torch.__version__,
        }
        return Measured(key, self.measured_dir)

    def adopt(self, measured: Measured, settings: SamplerSettings) -> dict:
        """Put the recorded costs in use now (singleLineDecoder auto); returns what is recorded."""
        recorded = measured.read()
        if settings.single_line_decoder == "auto" and "costs" in recorded:
            try:
                self.host.costs = Costs.from_json(recorded["costs"])
                if "costs" not in self.from_record:
                    self.from_record.append("costs")
            except (KeyError, TypeError, ValueError, AttributeError):
                recorded.pop("costs")  # a record of another shape: measured again, and not overwritten
        return recorded

    def run(self, settings: SamplerSettings | None = None, beside_fills: bool = False) -> dict:
        """After loading: compile the decoder step when `compile` asks for it ("auto": when an eager pass
        costs COMPILE_MIN_PASS_S or more), then measure a step (decoder pass and sampler) at the
        single-line canvas widths and a left-to-right token, the costs `choose_decoder` weighs. What the
        machine's record (model/measured.py) holds is taken instead of measured: the decision to compile,
        and the costs, which are then in use from the start. Returns what it measured.

        beside_fills (the server's case, `start`): callers' fills run meanwhile on other threads.
        Each stage then starts only once no fill has run for WARM_UP_QUIET_S (a user typing gets eager
        fills at once, and the warm-up takes the pauses), or, past `patient_until`, at once: the
        compile holds no lock (fills that do come run the eager step), each measurement holds the model
        lock as fills do (~1 s at most for the 46M model), so it runs between two fills. Measured costs
        come into use all at once at the end: until then single lines fill on the canvas. A closed
        Infiller (the host loaded another model) stops at the next stage."""
        t0 = time.perf_counter()
        settings = settings or SamplerSettings()
        # Costs are measured on as many threads as fills on an otherwise idle machine get.
        use_threads(self.host.threads.counts()[0])
        measured = self.record(settings)
        recorded = self.adopt(measured, settings)

        def stage() -> bool:
            """Wait for a quiet moment (beside fills, until `patient_until`); False: the model was dropped."""
            while beside_fills and not self.host.activity.closed:
                now = time.monotonic()
                if now >= self.patient_until:
                    break  # waited long enough: between fills (the model lock) from now on
                wait = self.host.activity.last_fill_end + WARM_UP_QUIET_S - now
                if wait <= 0 and not self.host.activity.filling:
                    break
                time.sleep(min(max(wait, 0.05), WARM_UP_QUIET_S, max(self.patient_until - now, 0.01)))
            return not self.host.activity.closed

        if self.host.step.wants_compile() and stage():
            eager, wanted = None, self.host.step.compile == "on" or recorded.get("compile")
            if wanted is None:  # "auto" and nothing recorded: time an eager pass, record what it says
                with self.host.model_lock:
                    eager = self._time_step(self.step_example(32, with_sc=True))
                wanted = bool(measured.settle("compile", eager >= COMPILE_MIN_PASS_S))
            elif self.host.step.compile != "on":
                self.from_record.append("compile")
            if wanted:
                # A compile beside fills keeps a core busy: they run on fewer threads meanwhile.
                self.host.threads.busy_elsewhere = beside_fills
                try:
                    with self.host.model_lock:
                        example = self.step_example(32, with_sc=True)
                    with _fills_wait_out_fx_traces(self.host.model_lock) if beside_fills else contextlib.nullcontext():
                        self.host.step.warm_up([example], self.host.threads.counts())
                finally:
                    self.host.threads.busy_elsewhere = False
            elif eager is not None:
                self.host.step.skip(f"an eager pass takes {1000 * eager:.1f} ms: compiling would not pay")
            else:
                self.host.step.skip("compiling would not pay, as measured for this model on this machine")
        if len(self.host.threads.counts()) > 1 and stage():  # threads auto adapts only where it changes no fill
            with self.host.model_lock:
                self.host.threads.verify(self._same_on_every_count())
        if settings.single_line_decoder == "auto" and "costs" not in recorded:
            # what choose_decoder weighs (~3 s for the 46M model)
            for attempt in range(COST_ATTEMPTS):
                costs = self._measure_costs(settings, stage)
                if costs is None:
                    return {}
                if costs.pass_s[16] <= 1.5 * costs.pass_s[32]:
                    break
                # a narrower canvas never costs more: a stall (another process) fell on every timing
                log.info("warm-up: step costs %s look stalled (try %d)", costs.pass_s, attempt + 1)
            # the first server's measurement wins: another may have recorded its own meanwhile
            self.host.costs = Costs.from_json(measured.settle("costs", costs.to_json()))
        elif stage():  # one short fill: first-call allocations happen here, not in the user's first fill
            with self.host.model_lock:
                self.host.fill_canvas([self._warm_request(8, settings, 2)])
        report = self._report(time.perf_counter() - t0)
        log.info("warm-up: %s", report)
        return report

    def _measure_costs(self, settings: SamplerSettings, stage: Callable[[], bool]) -> Costs | None:
        """A step at widths 16 and 32, a left-to-right token, the calibration line both ways (how many
        passes the canvas takes, how many tokens the line): each measurement once `stage` allows it, and
        each of its runs (a short fill) holding the lock fills hold, so that a fill waits for one run at
        most. None: the model was dropped meanwhile."""
        costs = Costs()
        line = FillRequest(
            WARM_TEXT,
            holes=((WARM_HOLE, WARM_HOLE),),
            max_tokens=24,
            single_line=True,
            settings=replace(settings, single_line_decoder="diffusion"),
        )
        measurements = (
            lambda: costs.set_pass(16, self._time_passes(16, settings)),
            lambda: costs.set_pass(32, self._time_passes(32, settings)),
            lambda: costs.set_token(self._time_token()),
            lambda: costs.set_line(self._locked(self.host.fill_canvas, [line])[0].forward_passes, 0),
            lambda: costs.set_line(costs.line_passes, self._locked(self.host.draft.fill, line).forward_passes),
        )
        for measure in measurements:
            if not stage():
                return None
            measure()
        return costs

    def _locked(self, fn: Callable, *args):
        with self.host.model_lock:
            return fn(*args)

    def _report(self, seconds: float) -> dict:
        host = self.host
        return {
            "compile": host.step.status,
            "compile_s": host.step.compile_seconds,
            "threads": host.threads.describe(),
            "pass_ms": {w: round(1000 * v, 2) for w, v in sorted(host.costs.pass_s.items())},
            "token_ms": host.costs.token_ms(),
            "line_passes": host.costs.line_passes,
            "line_tokens": host.costs.line_tokens,
            "recorded": list(self.from_record),  # taken from the machine's record instead of measured
            "seconds": round(seconds, 2),
        }

    def start(self, settings: SamplerSettings | None = None) -> threading.Thread:
        """`warm_up` on a thread of its own, so that the first fills need not wait for it (a compile
        takes 5-10 s from inductor's cache and 20-80 s without). A failure is logged; fills go on eager,
        on the canvas. The recorded costs (model/measured.py) are in use before this returns."""
        settings = settings or SamplerSettings()
        try:
            self.adopt(self.record(settings), settings)
        except Exception:  # an unreadable model directory: the warm-up measures
            log.debug("warm-up: no record read", exc_info=True)

        def run() -> None:
            # Compiling is pure Python for seconds. Each time a fill's thread lets go of the GIL (every
            # torch op) it waits up to the switch interval to get it back: at CPython's 5 ms a fill
            # beside the compile of the 46M model took 6.5 s (0.45 s alone), at 20 us 2.3-2.9 s.
            interval = sys.getswitchinterval()
            sys.setswitchinterval(min(interval, WARM_UP_SWITCH_INTERVAL_S))
            try:
                self.run(settings, beside_fills=True)
            except Exception:
                log.warning("model warm-up failed; fills run eager, on the canvas", exc_info=True)
            finally:
                sys.setswitchinterval(interval)
                self.host.activity.warming_up = False

        # The first stage waits a quiet moment too: a request queued behind the load runs first.
        self.host.activity.last_fill_end = max(self.host.activity.last_fill_end, time.monotonic())
        self.host.activity.warming_up = True
        self.patient_until = time.monotonic() + WARM_UP_PATIENCE_S
        thread = threading.Thread(target=run, name="canvas-warm-up", daemon=True)
        thread.start()
        return thread

    def _warm_request(self, slots: int, settings: SamplerSettings, steps: int) -> FillRequest:
        s = replace(
            settings,
            max_steps=steps,
            single_line_steps=None,
            early_stop=False,
            repair_rounds=0,
            single_line_decoder="diffusion",
        )
        return FillRequest(WARM_TEXT, holes=((WARM_HOLE, WARM_HOLE),), max_tokens=slots, settings=s, single_line=True)

    def _time_passes(self, width: int, settings: SamplerSettings, repeats: int = 3) -> float:
        """Seconds of one step (a decoder pass and the sampler's work) on a `width` canvas: a 5-step fill
        less a 1-step one (what both share cancels), over 4, each the fastest of `repeats`."""
        probe = self._warm_request(1, settings, 1)
        suffix = len(self.host.plan(probe, probe.settings).suffix)
        slots = max(1, width - min(suffix, self.host.limits(probe.settings).suffix_min))
        return _per_unit(
            lambda steps: self.host.fill_canvas([self._warm_request(slots, settings, steps)]),
            1,
            5,
            repeats,
            self.host.model_lock,
        )

    @torch.inference_mode()
    def _time_step(self, example, repeats: int = 3) -> float:
        """Seconds of one eager decoder pass on `example`, the fastest of `repeats` (after one untimed)."""
        best = math.inf
        for k in range(repeats + 1):
            t = time.perf_counter()
            self.host.step(*example)
            if k:
                best = min(best, time.perf_counter() - t)
        return best

    def _time_token(self) -> float:
        """Seconds per left-to-right token: 10 tokens less 2, over 8, each the fastest of three."""
        prompt = self.host.prompt_ids(WARM_TEXT[:WARM_HOLE])
        state = self._locked(self.host.prefix.encode, prompt)
        cached = len(prompt) - 1
        return _per_unit(
            lambda n: decode_left_to_right(
                self.host.loaded.model,
                prompt,
                n,
                set(),
                cached=cached,
                cache=self.host.prefix.continuation_cache(state, cached),
            ),
            2,
            10,
            lock=self.host.model_lock,
        )

    @torch.inference_mode()
    def _same_on_every_count(self) -> bool:
        """Whether every thread count `threads: auto` may pick computes bitwise the same prompt K/V and
        decoder step (the compiled one, once compiled) as the first: a fill must not depend on the load.
        Checked on a prompt as long as fills get (several 64-token chunks: a short one hid the difference:
        on 2 cores a 582-token prompt's K/V differed between 1 and 2 threads) and on canvases of 32 and 64."""
        widths = [w for w in (32, 64) if w <= self.host.loaded.canvas_length] or [32]
        seen = []
        for n in self.host.threads.counts():
            with on_threads(n):
                outputs = []
                for width in widths:
                    state, (ids, _, keep, cache, positions, masks) = self._example(width, with_sc=False, long=True)
                    gen = torch.Generator().manual_seed(width)
                    sc = torch.randn(*ids.shape, self.host.loaded.vocab_size, generator=gen) * 3
                    logits = self.host.step(ids, sc.to(self.host.loaded.device), keep, cache, positions, masks)
                    outputs.append((state.keys + state.values, logits))
                seen.append(outputs)
        first, rest = seen[0], seen[1:]
        return all(
            torch.equal(la, lb) and all(map(torch.equal, kva, kvb))
            for other in rest
            for (kva, la), (kvb, lb) in zip(first, other)
        )

    def step_example(self, width: int, with_sc: bool):
        """The arguments of a real decoder pass on a `width` canvas (what the step is compiled on)."""
        return self._example(width, with_sc)[1]

    @torch.inference_mode()
    def _example(self, width: int, with_sc: bool, long: bool = False):
        """(the prompt's freshly encoded state, the arguments of a real decoder pass on a `width` canvas);
        long: the prompt as long as the model's prompt window (the warm text repeated before it)."""
        req = self._warm_request(width // 2, SamplerSettings(), 2)
        if long:
            lead = WARM_TEXT * (self.host.max_prompt_tokens // 8)  # ~20 tokens a copy: past the window
            req = replace(req, text=lead + req.text, holes=tuple((a + len(lead), b + len(lead)) for a, b in req.holes))
        state = self.host.prefix.encode(self.host.prompt_ids(req.text[: req.holes[0][0]]))
        # the suffix as held as the canvas allows: the example's canvas is `width` wide
        plan = self.host.plan(req, replace(req.settings, suffix_tokens=width))
        batch, keep, cache, positions, masks = self.host.step_inputs([Row(0, plan.layouts[0], state, 0, plan.width)])
        sc = (
            torch.zeros(*batch.ids.shape, self.host.loaded.vocab_size, device=self.host.loaded.device)
            if with_sc
            else None
        )
        return state, (batch.ids, sc, keep, cache, positions, masks)
