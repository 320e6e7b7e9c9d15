"""The in-process model backend: a `Filler` (model/interface.py) over a loaded DiffusionGemma.

    filler = Infiller(load_model(path), make_judge=...)
    result = filler.fill(FillRequest(text, holes=((start, end),), language="python"), on_step=..., cancelled=...)

A request names character spans of a document; each becomes a hole on one shared canvas (so several
selections are filled jointly). The plan (model/plan.py, the same for every backend) gives the prompt,
encoded once into the K/V cache (and reused by the next request for the same `document`), and the
canvas rows: text between holes and the start of the suffix are held, their tokens the input on every
step and the output, their self-conditioning input zeroed (as vLLM's `diffusion_pinned` does).

Two samplers (`SamplerSettings.sampler`; "auto" is the checkpoint's default, see model/loading.py):
"reference" (model/reference.py: transformers' generate(), with syntax self-correction while
denoising) and "commit" (model/sampler.py: commit-once, syntax repair rounds after a row finishes).
A single hole may be tried with several slot counts as one batch (with the reference sampler only
when the checkpoint was not trained to end a hole with <eos>: otherwise one row with the most slots,
and the model picks the length); the best candidate wins by model/plan.py's `choose`.
`fill_batch` runs several requests in shared forward passes (the shared engine's scheduler uses it).
Off a fill's path, objects of their own that the Infiller holds: the warm-up after loading
(`warmer`, model/warm_up.py) and the left-to-right fill of a single line (`draft`, model/autoregressive.py).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from .autoregressive import LeftToRight
from .canvas import CanvasBatch, CanvasStep, DenoiseOutput, NoiseSpec, Row
from .costs import Costs
from .decoder_choice import choose_decoder
from .interface import Cancelled, FillerInfo, FillRequest, FillResult, Judge, JudgeFactory, OnStep, StepEvent
from .kv import PrefixEncoder
from .loading import LoadedModel
from .plan import (
    Candidate,
    FillPlan,
    PlanLimits,
    RowLayout,
    blamed_positions,
    choose,
    fills_of,
    plan_fill,
    plan_texts,
    positions_to_reopen,
    score_row,
    window_start,
)
from .reference import ReferenceParams, make_generators, reference_denoise
from .sampler import denoise
from .settings import SamplerSettings
from .step import DecoderStep
from .step_events import step_event
from .text import TokenText
from .threads import ThreadPolicy, use_threads
from .warm_up import FillActivity, WarmUp


class Infiller:
    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_prompt_tokens: int = 1024,
        min_suffix_tokens: int = 32,
        make_judge: JudgeFactory | None = None,
        compile: str = "off",
        threads: int = 0,
    ):
        self.loaded = loaded
        self.make_judge = make_judge  # the server's syntax judge, for requests that name a language
        self.text = TokenText(loaded)
        self.max_prompt_tokens = max_prompt_tokens
        # suffix tokens held on the canvas at least, when a request's settings leave suffix_tokens None
        self.min_suffix_tokens = min_suffix_tokens
        self.prefix = PrefixEncoder(loaded.model)
        self.step = DecoderStep(loaded.model, compile=compile)  # eager until the warm-up compiles it
        # torch threads per fill (model/threads.py): 0 = all cores while the machine is otherwise idle
        self.threads = ThreadPolicy.for_device(threads, loaded.device.type)
        self.costs = Costs()  # what a pass and a left-to-right token cost (warm-up), how long lines are
        # Held by every fill and by each warm-up measurement (the warm-up may run on its own thread): the
        # prompt cache and the sampler's running state are one fill's at a time.
        self.model_lock = threading.RLock()
        self.activity = FillActivity()
        self.noise = NoiseSpec(
            kind=loaded.noise,
            vocab_size=loaded.vocab_size,
            mask_id=loaded.mask_id,
            pad_id=loaded.pad_id,
            end_ids=tuple(sorted({loaded.eos_id, loaded.pad_id})),
            banned_ids=tuple(i for i in (loaded.bos_id, loaded.mask_id) if i is not None),
        )
        self.draft = LeftToRight(self)
        self.warmer = WarmUp(self)

    # ---- the Filler interface --------------------------------------------------------------

    def info(self) -> FillerInfo:
        lm = self.loaded
        return FillerInfo(
            model=lm.path.name,
            path=str(lm.path),
            device=str(lm.device),
            dtype=str(lm.dtype).removeprefix("torch."),
            canvas_length=lm.canvas_length,
            backend="in-process",
            noise=lm.noise,
            random_weights=lm.random_weights,
            compile=self.step.status,
            pass_ms=self.costs.pass_ms(32),
            token_ms=self.costs.token_ms(),
            warming_up=self.activity.warming_up,
            threads=self.threads.describe(),
            repair=True,
            reproducible=True,
            left_to_right=True,
        )

    def forget(self, document: str) -> None:
        self.prefix.forget(document)  # no lock: one dict pop (the editor's thread calls it mid-fill)

    def fill(
        self, request: FillRequest, on_step: OnStep | None = None, cancelled: Cancelled | None = None
    ) -> FillResult:
        with self._a_fill():
            return replace(self._fill(request, on_step, cancelled), threads=torch.get_num_threads())

    def fill_batch(
        self,
        requests: Sequence[FillRequest],
        *,
        on_step: Callable[[int, StepEvent], None] | None = None,
        cancelled: Cancelled | None = None,
    ) -> list[FillResult]:
        """Fill several requests in shared forward passes. They must share sampler settings.

        on_step(i, event) gets request i's own StepEvent after every step."""
        with self._a_fill():
            return [replace(r, threads=torch.get_num_threads()) for r in self.fill_canvas(requests, on_step, cancelled)]

    def close(self) -> None:
        """The host is done with this model (it loaded another): stop a background warm-up."""
        self.activity.closed = True

    def warm_up(self, settings: SamplerSettings | None = None) -> dict:
        """Compile and measure now (model/warm_up.py); returns what it measured."""
        return self.warmer.run(settings)

    def start_warm_up(self, settings: SamplerSettings | None = None) -> threading.Thread:
        """The warm-up on a thread of its own, beside the first fills (model/warm_up.py)."""
        return self.warmer.start(settings)

    @contextlib.contextmanager
    def _a_fill(self):
        """A caller's fill: holds the model lock, and is marked so that a background warm-up lets it
        finish (and waits a moment after)."""
        with self.model_lock:
            self.activity.filling = True
            use_threads(self.threads.choose())
            try:
                yield
            finally:
                self.activity.filling = False
                self.activity.last_fill_end = time.monotonic()

    def _fill(self, request: FillRequest, on_step: OnStep | None, cancelled: Cancelled | None) -> FillResult:
        if request.repair_threshold is not None:
            from .repair import repair_fill  # the repair's own canvas and passes (model/repair.py)

            return repair_fill(self, request, on_step, cancelled)
        decoder, why = self.choose_decoder(request)
        if decoder == "autoregressive":
            result = self.draft.fill(request, cancelled=cancelled)
        else:
            per_request = (lambda i, event: on_step(event)) if on_step is not None else None
            result = self.fill_canvas([request], per_request, cancelled)[0]  # inside fill's own _a_fill
        return replace(result, choice=why) if why else result

    def choose_decoder(self, request: FillRequest) -> tuple[str, str]:
        """("diffusion" | "autoregressive", why) for a request filled alone (model/decoder_choice.py)."""

        def canvas() -> tuple[int, int]:
            resolved = self.resolved(request.settings)
            return self.plan(request, resolved).width, self._steps_for(resolved, [request])

        return choose_decoder(request, self.loaded.single_line_decoder, self.costs, canvas)

    # ---- the plan (model/plan.py) ------------------------------------------------------------

    def resolved(self, settings: SamplerSettings) -> SamplerSettings:
        """None fields and sampler "auto" take the checkpoint's values."""
        return settings.resolved(self.loaded.generation, self.loaded.default_sampler)

    def limits(self, settings: SamplerSettings) -> PlanLimits:
        suffix = self.min_suffix_tokens if settings.suffix_tokens is None else settings.suffix_tokens
        return PlanLimits(
            canvas_length=self.loaded.canvas_length,
            max_prompt_tokens=self.max_prompt_tokens,
            suffix_tokens=suffix,
            # A checkpoint trained to end a hole with <eos> picks the fill's length itself: one row, the most slots.
            one_length=settings.sampler == "reference" and self.loaded.end_closes_hole,
        )

    def plan(self, request: FillRequest, settings: SamplerSettings) -> FillPlan:
        limits = self.limits(settings)
        return plan_fill(request, self.text.encode_many(plan_texts(request, limits)), self.text.vocab, limits)

    def prompt_ids(self, prefix: str) -> list[int]:
        """<bos> + the end of the prefix, as the plan has it (model/plan.py `window_start`)."""
        ids = self.text.encode(prefix[window_start(prefix, self.max_prompt_tokens) :])
        bos = [self.loaded.bos_id] if self.loaded.bos_id is not None else []
        return bos + ids[-(self.max_prompt_tokens - len(bos)) :]

    def _steps_for(self, settings: SamplerSettings, requests: Sequence[FillRequest]) -> int:
        """The step budget: max_steps, capped by single_line_steps when every request is a single line."""
        steps = settings.max_steps
        if settings.single_line_steps is not None and all(r.single_line for r in requests):
            steps = min(steps, settings.single_line_steps)
        return steps

    # ---- the canvas --------------------------------------------------------------------------

    def fill_canvas(self, requests, on_step=None, cancelled=None) -> list[FillResult]:
        """Fill requests on the canvas in shared passes; the caller holds the model lock."""
        t0 = time.perf_counter()
        if not requests:
            return []
        if any(r.settings != requests[0].settings for r in requests):
            raise ValueError("requests filled in one batch must share sampler settings")
        for r in requests:
            r.validate()
        settings = self.resolved(requests[0].settings)
        settings = replace(settings, max_steps=self._steps_for(settings, requests))  # single lines: fewer
        judges = [self._judge(r) for r in requests]
        plans = [self.plan(req, settings) for req in requests]
        states, prompt_info = [], []  # per request: its prompt's K/V, and (its tokens, those reused)
        for plan, req in zip(plans, requests):
            states.append(self.prefix.encode(list(plan.prompt), key=req.document))
            prompt_info.append((len(states[-1]), self.prefix.last_reused))

        # Narrower rows are padded to the batch's width and masked, so batching never changes a fill.
        width, pad = max(p.width for p in plans), self.loaded.pad_id
        rows: list[Row] = []
        for i, (plan, state) in enumerate(zip(plans, states)):
            for j, lay in enumerate(plan.layouts):
                extra = width - plan.width
                layout = RowLayout(ids=lay.ids + (pad,) * extra, hole=lay.hole + (-1,) * extra, slots=lay.slots)
                rows.append(Row(i, layout, state, settings.seed + j, plan.width))

        single = [requests[r.request].single_line for r in rows]
        out = self._run(rows, settings, on_step, cancelled, [judges[r.request] for r in rows], len(requests), single)
        seconds = time.perf_counter() - t0
        return [
            self._result(rows, out, i, judges[i], prompt_info[i], settings.sampler, seconds)
            for i in range(len(requests))
        ]

    def _judge(self, request: FillRequest) -> Judge | None:
        if request.language is None or self.make_judge is None:
            return None
        return self.make_judge(request.text, request.holes, request.language)

    @torch.inference_mode()  # as the samplers' tensors: a compiled step guards on how inputs were made
    def step_inputs(self, rows: list[Row]):
        """(batch, keep, cache, positions, masks): what every decoder pass over these rows reads."""
        device = self.loaded.device
        ids = torch.tensor([r.layout.ids for r in rows], device=device)  # (batch, canvas)
        hole = torch.tensor([r.layout.hole for r in rows], device=device)  # (batch, canvas)
        held = hole < 0
        widths = [r.width for r in rows]
        batch = CanvasBatch(ids=torch.where(held, ids, 0), held=held, hole=hole, widths=widths)
        cache, masks, lengths = self.prefix.decoder_cache([r.state for r in rows], ids.shape[1], widths)
        positions = lengths[:, None] + torch.arange(ids.shape[1], device=device)[None]  # (batch, canvas)
        # Held positions get a zero self-conditioning input (as vLLM's diffusion_pinned does).
        keep = ~held if bool(held.any()) else None
        return batch, keep, cache, positions, masks

    def _step_fn(self, rows: list[Row]):
        """(batch, step_fn): the rows' canvas batch and their decoder pass, canvas (B, C) -> logits (B, C, V).
        On a CPU whose load changes mid-fill, the pass moves to fewer threads."""
        batch, keep, cache, positions, masks = self.step_inputs(rows)
        step, policy, width = self.step, self.threads, batch.ids.shape[1]
        if self.loaded.device.type != "cpu" or policy.fixed:
            return batch, lambda canvas, sc_logits: step(canvas, sc_logits, keep, cache, positions, masks)

        def watched(canvas: torch.Tensor, sc_logits: torch.Tensor | None) -> torch.Tensor:
            n, t0 = torch.get_num_threads(), time.perf_counter()  # CPU ops are synchronous: a pass can be timed
            logits = step(canvas, sc_logits, keep, cache, positions, masks)
            if policy.observe(n, width, time.perf_counter() - t0):  # a load came up mid-fill
                use_threads(policy.fewest)
            return logits

        return batch, watched

    def _run(
        self, rows, settings: SamplerSettings, on_step, cancelled, row_judges, n_requests, single=None
    ) -> DenoiseOutput:
        batch, step_fn = self._step_fn(rows)
        errors_found = [0] * len(rows)
        vocab, decode_many = self.text.vocab, self.text.decode_many

        def verdict(row: int, row_ids: list[int]):
            return row_judges[row](fills_of(row_ids, rows[row].layout, vocab, decode_many))

        def repair(row: int, ids: torch.Tensor) -> list[int]:  # the commit sampler's repair rounds
            if row_judges[row] is None:
                return []
            row_ids = ids.tolist()
            bad = verdict(row, row_ids)
            reopen = positions_to_reopen(row_ids, rows[row].layout, bad, vocab, decode_many)
            errors_found[row] += sum(map(len, bad)) if reopen else 0
            return reopen

        def correct(row: int, ids: torch.Tensor) -> tuple[int, list[int]]:  # the reference sampler's correction
            if row_judges[row] is None:
                return 0, []
            row_ids = ids.tolist()
            bad = verdict(row, row_ids)
            return sum(map(len, bad)), blamed_positions(row_ids, rows[row].layout, bad, vocab, decode_many)

        def step_events(step: CanvasStep) -> None:
            ids, open_ = step.ids.tolist(), step.open.tolist()  # one host copy per step, for every request
            for i in range(n_requests):
                on_step(i, step_event(self.text, i, rows, step, ids, open_))

        gens = make_generators([r.seed for r in rows], self.loaded.device)
        events = step_events if on_step is not None else None
        if settings.sampler == "reference":
            return reference_denoise(
                step_fn,
                batch,
                ReferenceParams.from_settings(settings),
                self.noise.for_reference(),
                gens,
                on_step=events,
                cancelled=cancelled,
                correct=correct if any(row_judges) else None,
                max_corrections=settings.repair_rounds,
                # float32 self-conditioning logits even for a bf16 model: rounding them to bf16 flipped
                # 5% more argmaxes of the tiny model against fp32, and keeping them costs nothing
                sc_dtype=torch.float32,
                ends=self.hole_ends(single or [False] * len(rows)),
                fast_draws=True,
                statistics=self.step.statistics,
                keep_last=settings.step_candidates,
                no_end=first_slots(rows, settings.min_fill_tokens, self.loaded.device),
                end_delay=round(settings.end_delay * settings.max_steps),
            )
        ends = self.hole_ends(single) if single and any(single) else None
        out = denoise(
            step_fn, batch, settings, self.noise, gens, on_step=events, cancelled=cancelled, repair=repair, ends=ends
        )
        out.errors_found = errors_found
        return out

    def hole_ends(self, single_line: list[bool]) -> torch.Tensor:
        """(rows, vocab) bool: the tokens that end a row's holes for the reference sampler's early stop:
        <eos>/<pad>, and for a single-line row every token holding a line break (the fill is cut there)."""
        base = torch.zeros(self.loaded.vocab_size, dtype=torch.bool, device=self.loaded.device)
        base[sorted(self.text.vocab.ends)] = True
        return torch.stack([base | self.text.newline_tokens() if s else base for s in single_line])

    # ---- reading the canvases back: score, choose, build ------------------------------------------

    def _candidates(self, rows: list[Row], out: DenoiseOutput, request: int) -> list[Candidate]:
        """Request `request`'s candidate fills: each of its rows' final canvas, then (step_candidates) the
        argmax of each earlier step kept; the same fill of a row once."""
        canvases = [(out.ids.tolist(), out.token_logp.tolist(), [True] * len(rows))]
        canvases += [(ids.tolist(), logp.tolist(), active) for ids, logp, active in reversed(out.history)]
        mine = [k for k, r in enumerate(rows) if r.request == request]
        found, seen = [], set()
        for all_ids, logps, active in canvases:
            for k in mine:
                if not active[k]:
                    continue
                c = score_row(k, all_ids[k], logps[k], rows[k].layout, self.text.vocab, self.text.decode_many)
                if (k, c.fills) not in seen:  # the same fill at another step: judged once
                    seen.add((k, c.fills))
                    found.append(c)
        return found

    def _result(self, rows, out: DenoiseOutput, request: int, judge, prompt_info, sampler: str, seconds) -> FillResult:
        best, errors = choose(self._candidates(rows, out, request), judge)
        mine = [k for k, r in enumerate(rows) if r.request == request]
        k = best.row
        return FillResult(
            fills=best.fills,
            score=best.score,
            forward_passes=out.forward_passes,
            tokens=best.tokens,
            seconds=seconds,
            canvas_length=rows[k].width,
            slots=rows[k].layout.slots,
            candidates=len(mine),
            repairs=out.repairs[k],
            syntax_errors=errors,
            prompt_tokens=prompt_info[0],
            reused_prompt_tokens=prompt_info[1],
            errors_found=sum(out.errors_found[c] for c in mine),
            steps=max(out.steps[c] for c in mine),
            sampler=sampler,
        )


def first_slots(rows: list[Row], min_tokens: int, device: torch.device) -> torch.Tensor | None:
    """(rows, canvas) bool: each hole's first `min_tokens` slots (the end tokens are barred there), or
    None when min_tokens is 0."""
    if min_tokens <= 0:
        return None
    marks = []
    for r in rows:
        seen: dict[int, int] = {}
        row = []
        for h in r.layout.hole:
            row.append(h >= 0 and seen.get(h, 0) < min_tokens)
            if h >= 0:
                seen[h] = seen.get(h, 0) + 1
        marks.append(row)
    return torch.tensor(marks, dtype=torch.bool, device=device)
