"""The in-process model backend: a `Filler` (model/interface.py) over a loaded DiffusionGemma.

    filler = Infiller(load_model(path), make_judge=...)
    result = filler.fill(FillRequest(text, holes=((start, end),), language="python"), on_step=..., cancelled=...)

A request names character spans of a document; each becomes a hole on one shared canvas (so several
selections are filled jointly). The text before the first hole is the prompt, encoded once into the
K/V cache (and reused by the next request for the same `document`). Text between holes and the start
of the suffix are held on the canvas: their tokens are the input on every step and the output, and their
self-conditioning input is zeroed (as vLLM's `diffusion_pinned` does), whichever sampler runs.

Two samplers (`SamplerSettings.sampler`; "auto" is the checkpoint's default, see model/loading.py):
"reference" (model/reference.py: transformers' generate(), with syntax self-correction while
denoising) and "commit" (model/sampler.py: commit-once, syntax repair rounds after a row finishes).
A single hole may be tried with several slot counts as one batch (with the reference sampler only
when the checkpoint was not trained to end a hole with <eos>: otherwise one row with the most slots,
and the model picks the length); the best candidate wins by (syntax errors left, model score).
`fill_batch` runs several requests in shared forward passes (the shared engine's scheduler uses it).
Off a fill's path, in their own files: the warm-up after loading (model/warm_up.py) and the
left-to-right fill of a single line (model/autoregressive.py), mixins of Infiller.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from .autoregressive import LeftToRight
from .canvas import (
    CanvasBatch,
    CanvasStep,
    CanvasTooSmall,
    DenoiseOutput,
    NoiseSpec,
    Row,
    RowLayout,
    bucket_for,
    lay_out,
    needed_length,
)
from .costs import Costs
from .interface import OPEN_SLOT, Cancelled, FillerInfo, FillRequest, FillResult, Judge, JudgeFactory, OnStep, StepEvent
from .kv import PrefixEncoder
from .loading import LoadedModel
from .reference import ReferenceParams, make_generators, reference_denoise
from .sampler import denoise
from .settings import SamplerSettings
from .step import DecoderStep
from .threads import ThreadPolicy, use_threads
from .warm_up import WarmUp

log = logging.getLogger("canvas_ls.model.infill")

# singleLineDecoder "auto" fills left to right only when that is expected to save at least this much,
# absolutely and relatively: less is within the noise of the timings (a path that flipped with the
# machine's load would make fills irreproducible), and nobody notices it in an inline completion.
MIN_SAVING_S, MIN_SAVING = 0.050, 0.25


class Infiller(WarmUp, LeftToRight):
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
        self.tok = loaded.tokenizer
        self.max_prompt_tokens = max_prompt_tokens
        # suffix tokens held on the canvas at least, when a request's settings leave suffix_tokens None
        self.min_suffix_tokens = min_suffix_tokens
        self.prefix = PrefixEncoder(loaded.model)
        self.step = DecoderStep(loaded.model, compile=compile)  # eager until warm_up compiles it
        # torch threads per fill (model/threads.py): 0 = all cores while the machine is otherwise idle
        self.threads = ThreadPolicy.for_device(threads, loaded.device.type)
        self.costs = Costs()  # what a pass and a left-to-right token cost (warm_up), how long lines are
        # Held by every fill and by each warm-up measurement (warm_up may run on its own thread): the
        # prompt cache and the sampler's running state are one fill's at a time.
        self.model_lock = threading.RLock()
        self.filling = False  # a caller's fill is running (warm-up's own fills do not count)
        self.last_fill_end = -math.inf  # time.monotonic() when the last caller's fill ended
        self.closed = False  # the host dropped this model: a background warm-up stops at its next stage
        self.warming_up = False  # a background warm-up (start_warm_up) is running
        self._line_ends: torch.Tensor | None = None  # (vocab,) bool: tokens holding a line break
        self._texts: list[str] | None = None  # every token's own text (_token_texts)
        self._heal_masks: dict[str, torch.Tensor] = {}  # LeftToRight._heal's allowed tokens, by healed text
        self.noise = NoiseSpec(
            kind=loaded.noise,
            vocab_size=loaded.vocab_size,
            mask_id=loaded.mask_id,
            pad_id=loaded.pad_id,
            end_ids=tuple(sorted({loaded.eos_id, loaded.pad_id})),
            banned_ids=tuple(i for i in (loaded.bos_id, loaded.mask_id) if i is not None),
        )
        self._special = {i for i in (loaded.bos_id, loaded.mask_id) if i is not None}
        self._end = set(self.noise.end_ids)

    # ---- text <-> tokens -------------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False) if text else []

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def prompt_ids(self, prefix: str) -> list[int]:
        """<bos> + the end of the prefix. The window starts on a coarse grid of line starts, so typing
        at the cursor keeps the window's start (and its cached K/V) in place."""
        budget = self.max_prompt_tokens * 4  # ~4 characters per token of code
        start = 0
        if len(prefix) > budget:
            grid = budget // 4
            start = math.ceil((len(prefix) - budget) / grid) * grid
            newline = prefix.find("\n", start)
            start = newline + 1 if newline != -1 else start
        ids = self._encode(prefix[start:])[-(self.max_prompt_tokens - 1) :]
        bos = [self.loaded.bos_id] if self.loaded.bos_id is not None else []
        return bos + ids

    def hole_ids(self, row_ids: list[int], layout: RowLayout, h: int) -> tuple[list[int], int]:
        """Tokens of hole h up to its first end token, and that end token's slot (or -1)."""
        out, end_pos = [], -1
        for pos, (tid, hole) in enumerate(zip(row_ids, layout.hole)):
            if hole != h:
                continue
            if tid in self._end:
                end_pos = pos
                break
            if tid not in self._special:
                out.append(tid)
        return out, end_pos

    # ---- filling -------------------------------------------------------------------------

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
            warming_up=self.warming_up,
            threads=self.threads.describe(),
        )

    def forget(self, document: str) -> None:
        self.prefix.forget(document)  # no lock: one dict pop (the editor's thread calls it mid-fill)

    def fill(
        self, request: FillRequest, on_step: OnStep | None = None, cancelled: Cancelled | None = None
    ) -> FillResult:
        with self._a_fill():
            return replace(self._fill(request, on_step, cancelled), threads=torch.get_num_threads())

    @contextlib.contextmanager
    def _a_fill(self):
        """A caller's fill: holds the model lock, and is marked so that a background warm-up lets it
        finish (and waits a moment after)."""
        with self.model_lock:
            self.filling = True
            use_threads(self.threads.choose())
            try:
                yield
            finally:
                self.filling = False
                self.last_fill_end = time.monotonic()

    def close(self) -> None:
        """The host is done with this model (it loaded another): stop a background warm-up."""
        self.closed = True

    def _fill(self, request: FillRequest, on_step: OnStep | None, cancelled: Cancelled | None) -> FillResult:
        if request.repair_threshold is not None:
            from .repair import repair_fill

            return repair_fill(self, request, on_step, cancelled)
        decoder, why = self.choose_decoder(request)
        if decoder == "autoregressive":
            result = self.fill_autoregressive(request, cancelled=cancelled)
        else:
            per_request = (lambda i, event: on_step(event)) if on_step is not None else None
            result = self._fill_batch([request], per_request, cancelled)[0]  # inside fill's own _a_fill
        return replace(result, choice=why) if why else result

    # ---- the canvas or left to right --------------------------------------------------------

    def choose_decoder(self, request: FillRequest) -> tuple[str, str]:
        """("diffusion" | "autoregressive", why) for a request filled alone. A single-line request whose
        settings say single_line_decoder "auto" takes the checkpoint's choice where it states one
        (canvas_ls.json "single_line_decoder"; left to right only with code before the cursor on its
        line and none after it, since the draft never sees the suffix), else the path expected to be
        faster: the canvas costs
        (passes the warm-up's calibration line took, at most the step budget) x (a step at the request's
        canvas width); left to right costs (tokens that line took, at most the slots + 1) x (a token).
        Left to right wins when it saves MIN_SAVING_S and MIN_SAVING of the canvas's time. Without a
        warm-up the canvas fills. Earlier fills never count: a request keeps its path all session."""
        if request.decoder == "autoregressive":
            return "autoregressive", ""
        s = request.settings
        if not request.single_line or len(request.holes) != 1 or s.single_line_decoder == "diffusion":
            return "diffusion", ""
        if s.single_line_decoder == "autoregressive":
            return "autoregressive", "single-line decoder: autoregressive"
        preferred = self.loaded.single_line_decoder
        if preferred is not None:  # the checkpoint's measured choice, where it was measured
            start, end = request.holes[0]
            line_end = request.text.find("\n", end)
            rest = request.text[end : len(request.text) if line_end < 0 else line_end]
            before = request.text[request.text.rfind("\n", 0, start) + 1 : start]
            # mid-line, nothing after the cursor: the draft never sees the suffix (development set:
            # dev_tasks.py --mid-line)
            if preferred == "autoregressive" and before.strip() and not rest.strip():
                return "autoregressive", "auto: autoregressive (the checkpoint's choice at a line's end)"
            if preferred == "diffusion":
                return "diffusion", "auto: diffusion (the checkpoint's choice)"
        resolved = s.resolved(self.loaded.generation, self.loaded.default_sampler)
        try:
            width = self._plan(request, self._suffix_tokens(resolved), self._one_length(resolved))[3]
        except CanvasTooSmall:
            return "diffusion", ""  # fill_batch says why
        est = self.costs.estimate(width, self._steps_for(resolved, [request]), request.max_tokens)
        if est is None:
            return "diffusion", "auto: diffusion (costs not measured)"
        canvas_s, ltr_s = est
        faster = canvas_s - ltr_s >= max(MIN_SAVING_S, MIN_SAVING * canvas_s)
        pick = "autoregressive" if faster else "diffusion"
        return pick, f"auto: {pick} (estimated: canvas {1000 * canvas_s:.0f} ms, left to right {1000 * ltr_s:.0f} ms)"

    def _one_length(self, settings: SamplerSettings) -> bool:
        # A checkpoint trained to end a hole with <eos> picks the fill's length itself: one row, the most slots.
        return settings.sampler == "reference" and self.loaded.end_closes_hole

    def _suffix_tokens(self, settings: SamplerSettings) -> int:
        return self.min_suffix_tokens if settings.suffix_tokens is None else settings.suffix_tokens

    def _steps_for(self, settings: SamplerSettings, requests: Sequence[FillRequest]) -> int:
        """The step budget: max_steps, capped by single_line_steps when every request is a single line."""
        steps = settings.max_steps
        if settings.single_line_steps is not None and all(r.single_line for r in requests):
            steps = min(steps, settings.single_line_steps)
        return steps

    def _plan(self, req: FillRequest, suffix_min: int, one_length: bool):
        """(middles, suffix, slot options, own canvas width) of a request."""
        middles = [self._encode(req.text[a[1] : b[0]]) for a, b in zip(req.holes, req.holes[1:])]
        suffix = self._encode(req.text[req.holes[-1][1] :][: 4 * self.loaded.canvas_length])
        # Slots never exceed what the canvas holds beside the text between holes and some suffix.
        room = self.loaded.canvas_length - sum(map(len, middles)) - min(len(suffix), suffix_min)
        per_hole = room // len(req.holes)
        if per_hole < 1:
            raise CanvasTooSmall(
                f"the text between the selections needs {sum(map(len, middles))} tokens; the canvas holds {self.loaded.canvas_length}"
            )
        if req.length_candidates and one_length:
            options = [[min(max(req.length_candidates), per_hole)]]
        elif req.length_candidates:
            counts = sorted({min(n, per_hole) for n in req.length_candidates}, reverse=True)
            options = [[n] for n in counts]
        else:
            options = [[min(req.max_tokens, per_hole)] * len(req.holes)]
        # A request's candidates share the largest bucket any of them needs.
        own = max(bucket_for(needed_length(o, middles, suffix, suffix_min), self.loaded.canvas_length) for o in options)
        return middles, suffix, options, own

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
            return [replace(r, threads=torch.get_num_threads()) for r in self._fill_batch(requests, on_step, cancelled)]

    def _fill_batch(self, requests, on_step=None, cancelled=None) -> list[FillResult]:
        t0 = time.perf_counter()
        if not requests:
            return []
        if any(r.settings != requests[0].settings for r in requests):
            raise ValueError("requests filled in one batch must share sampler settings")
        for r in requests:
            r.validate()
        # None fields and sampler "auto" take the checkpoint's values; single lines may take fewer steps
        settings = requests[0].settings.resolved(self.loaded.generation, self.loaded.default_sampler)
        settings = replace(settings, max_steps=self._steps_for(settings, requests))
        one_length = self._one_length(settings)
        suffix_min = self._suffix_tokens(settings)
        judges = [self._judge(r) for r in requests]

        # Plan each request: its prompt state, the held token runs, and the slot counts to try.
        plans = []
        prompt_info = []
        for req in requests:
            state = self.prefix.encode(self.prompt_ids(req.text[: req.holes[0][0]]), key=req.document)
            prompt_info.append((len(state), self.prefix.last_reused))
            plans.append((state, *self._plan(req, suffix_min, one_length)))

        # Narrower rows are padded to the batch's width and masked, so batching never changes a fill.
        width = max(plan[4] for plan in plans)
        rows: list[Row] = []
        for i, (state, middles, suffix, options, own) in enumerate(plans):
            for j, slots in enumerate(options):
                lay = lay_out(slots, middles, suffix, own, self.loaded.pad_id)
                pad = width - own
                layout = RowLayout(
                    ids=lay.ids + (self.loaded.pad_id,) * pad, hole=lay.hole + (-1,) * pad, slots=lay.slots
                )
                rows.append(Row(i, layout, state, settings.seed + j, own))

        single = [requests[r.request].single_line for r in rows]
        out = self._run(rows, settings, on_step, cancelled, [judges[r.request] for r in rows], len(requests), single)
        return self._pick(requests, rows, out, judges, prompt_info, settings.sampler, time.perf_counter() - t0)

    def _judge(self, request: FillRequest) -> Judge | None:
        if request.language is None or self.make_judge is None:
            return None
        return self.make_judge(request.text, request.holes, request.language)

    @torch.inference_mode()  # as the samplers' tensors: a compiled step guards on how inputs were made
    def _step_inputs(self, rows: list[Row]):
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

    def _run(
        self, rows, settings: SamplerSettings, on_step, cancelled, row_judges, n_requests, single=None
    ) -> DenoiseOutput:
        device = self.loaded.device
        batch, keep, cache, positions, masks = self._step_inputs(rows)
        step, policy, width = self.step, self.threads, batch.ids.shape[1]
        watch = device.type == "cpu" and not policy.fixed  # CPU ops are synchronous: a pass can be timed

        def step_fn(canvas: torch.Tensor, sc_logits: torch.Tensor | None) -> torch.Tensor:
            if not watch:
                return step(canvas, sc_logits, keep, cache, positions, masks)
            n, t0 = torch.get_num_threads(), time.perf_counter()
            logits = step(canvas, sc_logits, keep, cache, positions, masks)
            if policy.observe(n, width, time.perf_counter() - t0):  # a load came up mid-fill
                use_threads(policy.fewest)
            return logits

        errors_found = [0] * len(rows)

        def repair(row: int, row_ids: torch.Tensor) -> list[int]:
            judge = row_judges[row]
            if judge is None:
                return []
            found, reopen = self._positions_to_reopen(rows[row].layout, row_ids.tolist(), judge)
            errors_found[row] += found if reopen else 0
            return reopen

        def correct(row: int, row_ids: torch.Tensor) -> tuple[int, list[int]]:
            judge = row_judges[row]
            if judge is None:
                return 0, []
            return self._blamed_positions(rows[row].layout, row_ids.tolist(), judge)

        def step_events(step: CanvasStep) -> None:
            ids, open_ = step.ids.tolist(), step.open.tolist()  # one host copy per step, for every request
            for i in range(n_requests):
                on_step(i, self._step_event(i, rows, step, ids, open_))

        gens = make_generators([r.seed for r in rows], device)
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
                # float32 self-conditioning logits even for a bf16 model: rounding them to bf16 flipped
                # 5% more argmaxes of the tiny model against fp32, and keeping them costs nothing
                max_corrections=settings.repair_rounds,
                sc_dtype=torch.float32,
                ends=self.hole_ends(single or [False] * len(rows)),
                fast_draws=True,
                statistics=self.step.statistics,
                keep_last=settings.step_candidates,
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
        base[sorted(self._end)] = True
        return torch.stack([base | self._newline_tokens() if s else base for s in single_line])

    def _token_texts(self) -> list[str]:
        """Every token's own text, by id (the vocabulary decoded once; "" past the tokenizer's ids)."""
        if self._texts is None:
            known = min(self.loaded.vocab_size, len(self.tok))
            texts = self.tok.batch_decode(
                [[i] for i in range(known)], skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
            self._texts = texts + [""] * (self.loaded.vocab_size - known)
        return self._texts

    def _newline_tokens(self) -> torch.Tensor:
        """(vocab,) bool: the tokens whose text holds a line break."""
        if self._line_ends is None:
            ends = torch.zeros(self.loaded.vocab_size, dtype=torch.bool)
            ends[[i for i, t in enumerate(self._token_texts()) if "\n" in t or "\r" in t]] = True
            self._line_ends = ends.to(self.loaded.device)
        return self._line_ends

    def _step_event(self, request: int, rows: list[Row], step: CanvasStep, ids, open_) -> StepEvent:
        """Request `request`'s view of a step: counts over its rows, the canvas of its first row, and
        the round of its row that is furthest into repair."""
        mine = [k for k, r in enumerate(rows) if r.request == request]
        committed = sum(1 for k in mine for pos, h in enumerate(rows[k].layout.hole) if h >= 0 and not open_[k][pos])
        slots = sum(sum(rows[k].layout.slots) for k in mine)
        k = max(mine, key=lambda k: (step.repairs[k], step.active[k]))
        done_round = not step.active[k] and step.repairs[k] > 0
        shown = step.round_steps[k] if done_round else min(max(step.round_step[k], 1), step.round_steps[k])
        return StepEvent(
            step=step.step,
            round_step=shown,
            round_steps=step.round_steps[k],
            repair=step.repairs[k],
            committed=committed,
            slots=slots,
            texts=self._render_holes(rows[mine[0]].layout, ids[mine[0]], open_[mine[0]]),
        )

    def _fills(self, layout: RowLayout, row_ids: list[int]) -> tuple[str, ...]:
        return tuple(self._decode(self.hole_ids(row_ids, layout, h)[0]) for h in range(len(layout.slots)))

    def _positions_to_reopen(self, layout: RowLayout, row_ids: list[int], judge: Judge) -> tuple[int, list[int]]:
        """The commit loop's repair: (errors found, positions from the token holding the first syntax
        error to the end of its hole)."""
        fills = self._fills(layout, row_ids)
        verdict = judge(fills)
        found = sum(map(len, verdict))
        for h, bad in enumerate(verdict):
            if not bad:
                continue
            first_char = min(a for a, _ in bad)
            toks, _ = self.hole_ids(row_ids, layout, h)
            k = 0  # first token whose decoded text reaches past first_char
            while k < len(toks) and len(self._decode(toks[: k + 1])) <= first_char:
                k += 1
            slot_positions = [p for p, hh in enumerate(layout.hole) if hh == h]
            return found, slot_positions[k:]
        return found, []

    def _blamed_positions(self, layout: RowLayout, row_ids: list[int], judge: Judge) -> tuple[int, list[int]]:
        """The reference sampler's self-correction: (errors found, the canvas positions of the tokens the
        judge blames). A zero-width error (a MISSING node) blames the tokens on both sides of it; an error
        at a fill's end (it broke the code after it) also blames the slot that ends the fill, so the
        fill can grow."""
        verdict = judge(self._fills(layout, row_ids))
        blamed: list[int] = []
        for h, bad in enumerate(verdict):
            if not bad:
                continue
            kept = [(p, row_ids[p]) for p in self._hole_positions(row_ids, layout, h)]
            end_pos = self.hole_ids(row_ids, layout, h)[1]
            ends, text_len = [], 0  # each kept token's end offset in the decoded fill
            for k in range(len(kept)):
                text_len = len(self._decode([t for _, t in kept[: k + 1]]))
                ends.append(text_len)
            for a, b in bad:
                lo, hi = (a - 1, a + 1) if b <= a else (a, b)
                start = 0
                for (p, _), end in zip(kept, ends):
                    if start < hi and end > lo:
                        blamed.append(p)
                    start = end
                if b >= text_len:
                    slots = [p for p, hh in enumerate(layout.hole) if hh == h]
                    after = [p for p in slots if not kept or p > kept[-1][0]]
                    if end_pos >= 0:
                        blamed.append(end_pos)
                    elif after:
                        blamed.append(after[0])
        return sum(map(len, verdict)), sorted(set(blamed))

    def _hole_positions(self, row_ids: list[int], layout: RowLayout, h: int) -> list[int]:
        """Canvas positions of hole h's fill tokens (those `hole_ids` keeps), in order."""
        out = []
        for pos, (tid, hole) in enumerate(zip(row_ids, layout.hole)):
            if hole != h:
                continue
            if tid in self._end:
                break
            if tid not in self._special:
                out.append(pos)
        return out

    def _pick(
        self, requests, rows, out: DenoiseOutput, judges: list[Judge | None], prompt_info, sampler: str, seconds
    ) -> list[FillResult]:
        # Candidate canvases: each row's final one, then (step_candidates) its argmax at earlier steps.
        canvases = [(out.ids.tolist(), out.token_logp.tolist(), [True] * len(rows))]
        canvases += [(ids.tolist(), logp.tolist(), active) for ids, logp, active in reversed(out.history)]
        results = []
        for i, req in enumerate(requests):
            cands = [k for k, r in enumerate(rows) if r.request == i]
            scored_fills = []  # (score, k, fills, tokens), each distinct fill of a row once
            seen: set[tuple[int, tuple[str, ...]]] = set()
            for all_ids, logps, active in canvases:
                for k in cands:
                    if not active[k]:
                        continue
                    layout, row_ids = rows[k].layout, all_ids[k]
                    fills = self._fills(layout, row_ids)
                    if (k, fills) in seen:  # the same fill at another step: scored (and judged) once
                        continue
                    seen.add((k, fills))
                    scored, ntok = [], 0
                    for h in range(len(layout.slots)):
                        toks, end_pos = self.hole_ids(row_ids, layout, h)
                        ntok += len(toks)
                        positions = [p for p, hh in enumerate(layout.hole) if hh == h][: len(toks)]
                        if end_pos >= 0:
                            positions.append(end_pos)
                        scored += [logps[k][p] for p in positions]
                    score = sum(scored) / len(scored) if scored else float("-inf")
                    scored_fills.append((score, k, fills, ntok))
            # The fewest syntax errors, then the highest score: judged best score first (a stable sort:
            # the final canvas wins a tie), stopping at the first clean fill, which nothing after beats.
            # An empty fill comes after every other: it wins only when each one that writes something
            # adds syntax errors (the bundled model often scores "nothing" highest after `return `).
            best = None
            for score, k, fills, ntok in sorted(scored_fills, key=lambda c: (not any(c[2]), -c[0])):
                errors = sum(len(b) for b in judges[i](fills)) if judges[i] is not None else 0
                if best is None or errors < best[-1]:
                    best = (k, fills, score, ntok, errors)
                if errors == 0:
                    break
            k, fills, score, ntok, errors = best
            results.append(
                FillResult(
                    fills=fills,
                    score=score,
                    forward_passes=out.forward_passes,
                    tokens=ntok,
                    seconds=seconds,
                    canvas_length=rows[k].width,
                    slots=rows[k].layout.slots,
                    candidates=len(cands),
                    repairs=out.repairs[k],
                    syntax_errors=errors,
                    prompt_tokens=prompt_info[i][0],
                    reused_prompt_tokens=prompt_info[i][1],
                    errors_found=sum(out.errors_found[c] for c in cands),
                    steps=max(out.steps[c] for c in cands),
                    sampler=sampler,
                )
            )
        return results

    def _render_holes(self, layout: RowLayout, ids: list[int], open_: list[bool]) -> tuple[str, ...]:
        """Each hole's slots at this step: committed tokens as text, open positions as OPEN_SLOT."""
        texts = []
        for h in range(len(layout.slots)):
            pieces, run = [], []
            for pos, hole in enumerate(layout.hole):
                if hole != h:
                    continue
                tid = ids[pos]
                if open_[pos]:
                    pieces.append(self._decode(run))
                    run = []
                    pieces.append(OPEN_SLOT)
                elif tid not in self._end and tid not in self._special:
                    run.append(tid)  # decode runs together: a character may span byte-level tokens
            pieces.append(self._decode(run))
            texts.append("".join(pieces))
        return tuple(texts)
