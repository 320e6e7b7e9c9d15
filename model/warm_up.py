"""Warm-up, the part of the in-process backend that runs once after loading (on a thread of its own,
beside the first fills): compile the decoder step when it pays, and measure what a canvas step and a
left-to-right token cost on this machine (model/costs.py: what `Infiller.choose_decoder` weighs).

An object the Infiller holds (`Infiller.warmer`), kept apart from it: none of this is on a fill's path.
It drives the model through `WarmUpHost`, the few things of the Infiller it declares it uses.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

import torch

from .autoregressive import decode_left_to_right
from .canvas import Row
from .costs import Costs
from .interface import FillRequest, FillResult
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
WARM_UP_QUIET_S = 1.0  # beside fills, each warm-up stage waits until no fill has run for this long
# What warm_up fills to time passes and left-to-right tokens, and compiles the step on.
WARM_TEXT = "import os\n\n\ndef read(path):\n    with open(path) as f:\n        data = \n    return data\n"
WARM_HOLE = WARM_TEXT.index("data = ") + len("data = ")


def _per_unit(run: Callable[[int], object], low: int, high: int, repeats: int = 3) -> float:
    """Seconds per unit of run(n): (fastest run(high) - fastest run(low)) / (high - low) over `repeats`
    interleaved tries. What runs at any n (encoding the prompt) cancels; the fastest of each keeps out
    the stalls a busy machine adds."""
    best = {low: math.inf, high: math.inf}
    for _ in range(repeats):
        for n in (low, high):
            t = time.perf_counter()
            run(n)
            best[n] = min(best[n], time.perf_counter() - t)
    per_unit = (best[high] - best[low]) / (high - low)
    return per_unit if per_unit > 0 else best[high] / high


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

    def __init__(self, host: WarmUpHost):
        self.host = host

    def run(self, settings: SamplerSettings | None = None, beside_fills: bool = False) -> dict:
        """After loading: compile the decoder step when `compile` asks for it ("auto": when an eager pass
        costs COMPILE_MIN_PASS_S or more), then measure a step (decoder pass and sampler) at the
        single-line canvas widths and a left-to-right token, the costs `choose_decoder` weighs. Returns
        what it measured.

        beside_fills (the server's case, `start`): callers' fills run meanwhile on other threads.
        Each stage then starts only once no fill has run for WARM_UP_QUIET_S (a user typing gets eager
        fills at once, and the warm-up takes the pauses); the compile holds no lock (fills that do come
        run the eager step), each measurement holds the model lock as fills do (~1 s at most for the
        46M model). The costs come into use all at once at the end: until then single lines fill on the
        canvas. A closed Infiller (the host loaded another model) stops at the next stage."""
        t0 = time.perf_counter()
        settings = settings or SamplerSettings()
        # Costs are measured on as many threads as fills on an otherwise idle machine get.
        use_threads(self.host.threads.counts()[0])

        def stage() -> bool:
            """Wait for a quiet moment (beside fills); False: the model was dropped, stop."""
            while beside_fills and not self.host.activity.closed:
                wait = self.host.activity.last_fill_end + WARM_UP_QUIET_S - time.monotonic()
                if wait <= 0 and not self.host.activity.filling:
                    break
                time.sleep(min(max(wait, 0.05), WARM_UP_QUIET_S))
            return not self.host.activity.closed

        if self.host.step.wants_compile() and stage():
            with self.host.model_lock:
                example = self.step_example(32, with_sc=True)
                eager = self._time_step(example)
            if self.host.step.compile == "on" or eager >= COMPILE_MIN_PASS_S:
                # A compile beside fills keeps a core busy: they run on fewer threads meanwhile.
                self.host.threads.busy_elsewhere = beside_fills
                try:
                    self.host.step.warm_up([example], self.host.threads.counts())
                finally:
                    self.host.threads.busy_elsewhere = False
            else:
                self.host.step.skip(f"an eager pass takes {1000 * eager:.1f} ms: compiling would not pay")
        if len(self.host.threads.counts()) > 1 and stage():  # threads auto adapts only where it changes no fill
            with self.host.model_lock:
                self.host.threads.verify(self._same_on_every_count())
        if settings.single_line_decoder == "auto":  # what choose_decoder weighs (~3 s for the 46M model)
            costs = Costs()
            # The calibration line, both ways: how many passes the canvas takes, how many tokens the line.
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
                lambda: costs.set_line(
                    self.host.fill_canvas([line])[0].forward_passes, self.host.draft.fill(line).forward_passes
                ),
            )
            for measure in measurements:  # each in a quiet moment, holding the lock fills hold
                if not stage():
                    return {}
                with self.host.model_lock:
                    measure()
            self.host.costs = costs
        elif stage():  # one short fill: first-call allocations happen here, not in the user's first fill
            with self.host.model_lock:
                self.host.fill_canvas([self._warm_request(8, settings, 2)])
        report = self._report(time.perf_counter() - t0)
        log.info("warm-up: %s", report)
        return report

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
            "seconds": round(seconds, 2),
        }

    def start(self, settings: SamplerSettings | None = None) -> threading.Thread:
        """`warm_up` on a thread of its own, so that the first fills need not wait for it (a compile
        takes 5-10 s from inductor's cache and 20-80 s without). A failure is logged; fills go on eager,
        on the canvas."""

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
            lambda steps: self.host.fill_canvas([self._warm_request(slots, settings, steps)]), 1, 5, repeats
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
        state = self.host.prefix.encode(prompt)
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
        )

    @torch.inference_mode()
    def _same_on_every_count(self) -> bool:
        """Whether every thread count `threads: auto` may pick computes bitwise the same prompt K/V and
        decoder step (the compiled one, once compiled) as the first: a fill must not depend on the load."""
        seen = []
        for n in self.host.threads.counts():
            with on_threads(n):
                state, (ids, _, keep, cache, positions, masks) = self._example(32, with_sc=False)
                if not seen:
                    gen = torch.Generator().manual_seed(0)
                    sc = (
                        torch.randn(*ids.shape, self.host.loaded.vocab_size, generator=gen).to(self.host.loaded.device)
                        * 3
                    )
                seen.append((state.keys + state.values, self.host.step(ids, sc, keep, cache, positions, masks)))
        (kv, logits), rest = seen[0], seen[1:]
        return all(torch.equal(logits, b) and all(map(torch.equal, kv, other)) for other, b in rest)

    def step_example(self, width: int, with_sc: bool):
        """The arguments of a real decoder pass on a `width` canvas (what the step is compiled on)."""
        return self._example(width, with_sc)[1]

    @torch.inference_mode()
    def _example(self, width: int, with_sc: bool):
        """(the prompt's freshly encoded state, the arguments of a real decoder pass on a `width` canvas)."""
        req = self._warm_request(width // 2, SamplerSettings(), 2)
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
