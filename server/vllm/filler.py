"""VllmFiller: the `Filler` interface (model/interface.py) served by a vLLM (>= 0.32) DiffusionGemma server.

    filler = VllmFiller("http://gpu-box:8000", api_key=None, timeout=30, tokenizer_path="", make_judge=make_judge)
    result = filler.fill(FillRequest(text, holes=((start, end),), language="python"), cancelled=...)

Plain Python (httpx and tokenizers; never torch or transformers). vLLM's DiffusionGemma takes a seed
canvas with pinned positions per request (http.py), which is what a fill is, so the canvas is laid out as
in-process (model/plan.py): hole slots seeded with uniform noise, the text between holes and the start
of the suffix pinned, then padding; the prompt is the prefix as token ids; widths come in buckets up to
the served canvas. What each in-process feature becomes here:
  * pinned tokens: vLLM returns its own argmax at pinned positions, so they are written back;
  * length candidates: concurrent requests, chosen by the syntax errors each adds, then by model score
    (the mean returned log-probability of the fill's tokens and its end token);
  * syntax repair: one more request per round, the good part of the winner pinned and the rest (from
    the token holding the first syntax error to the end of its hole) re-seeded with noise;
  * several holes: filled jointly on one canvas;
  * cancellation: the HTTP request runs on a private event-loop thread; `cancelled()` is polled every
    20 ms and, when it turns true, the request is dropped, which makes vLLM abort it (http.py);
  * no live canvas: vLLM gives no intermediate canvases (`info().live_canvas` is False); `on_step` gets
    one event per completed round.
Sampler settings that apply: max_steps (`diffusion_max_steps`, capped by the server; None: the server's
own), repair_rounds, and seed (the initial noise only: vLLM does not take a per-request seed, so a fill is
not reproducible). The entropy bound and temperature schedule are server-wide, from the checkpoint's
generation_config.json; the left-to-right decoder is not available.

The server is contacted on first use, not when the filler is made (probe.py); any failure there is
retried by the next fill. Errors never produce an edit (errors.py); the API key is never shown.

The package's modules: errors.py (the errors, URLs for messages, the key holder), tokenizer.py (the
checkpoint's tokenizer files), http.py (`VllmConnection`: requests on the event-loop thread), probe.py
(first contact, `Served`) and this file (`VllmFiller`: planning a fill and judging what comes back).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass

from canvas_ls.model.interface import (
    BadFill,
    Cancelled,
    FillCancelled,
    FillerInfo,
    FillRequest,
    FillResult,
    JudgeFactory,
    OnStep,
    StepEvent,
)
from canvas_ls.model.plan import (
    Candidate,
    FillPlan,
    PlanLimits,
    RowLayout,
    Vocab,
    choose,
    plan_fill,
    plan_texts,
    positions_to_reopen,
    score_row,
)
from canvas_ls.model.settings import SamplerSettings

from .errors import VllmDied, VllmUnreachable, base_url
from .http import MAX_CONNECTIONS, POLL_S, VllmConnection
from .probe import Served, probe
from .tokenizer import LocalTokenizer

log = logging.getLogger("canvas_ls.vllm")


@dataclass
class _Canvas:
    """One candidate row as vLLM returned it: held tokens written back in place."""

    row: int  # its candidate row in the plan
    ids: list[int]
    logp: list[float]  # per position, the log-probability of the returned token
    repairs: int = 0


class VllmFiller:
    """A `Filler` over a vLLM server's /v1/completions. Thread-safe; the HTTP runs on its own thread."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        tokenizer_path: str = "",
        make_judge: JudgeFactory | None = None,
        *,
        max_prompt_tokens: int = 1024,
        min_suffix_tokens: int = 32,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self._http = VllmConnection(base_url(url), api_key, timeout, max_connections)  # holds the key
        self.url = self._http.url  # what messages and info() show
        self.timeout = self._http.timeout
        self.make_judge = make_judge
        self.max_prompt_tokens = max_prompt_tokens
        self.min_suffix_tokens = min_suffix_tokens
        self.tokenizer_path = tokenizer_path or ""
        self._local = LocalTokenizer(tokenizer_path) if tokenizer_path else None
        self._served: Served | None = None
        self._start_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"VllmFiller({self.url!r}, api_key={'<set>' if self._http.has_key else None}, timeout={self.timeout:g})"

    # ---- the Filler interface ----------------------------------------------------------------

    def info(self) -> FillerInfo:
        s = self._served
        return FillerInfo(
            model=s.model if s else "(vLLM not contacted yet)",
            path=self.url,
            device="vllm",
            dtype="served",
            canvas_length=s.width if s else 0,
            backend=f"vllm {self.url}",
            noise="uniform",
            random_weights=bool(self._local and self._local.random_weights()),
            live_canvas=False,
        )

    def forget(self, document: str) -> None:
        """Nothing to drop: vLLM's own prefix cache keeps (and evicts) prompt K/V."""

    def start(self, cancelled: Cancelled | None = None) -> None:
        """Contact the server now (the first fill does this otherwise). Raises as `fill` does."""
        self._start(cancelled)

    def close(self) -> None:
        """Drop the connections and stop the HTTP thread."""
        self._http.close()

    def fill(
        self, request: FillRequest, on_step: OnStep | None = None, cancelled: Cancelled | None = None
    ) -> FillResult:
        t0 = time.perf_counter()
        request.validate()
        if request.decoder != "diffusion":
            raise BadFill('the vLLM backend fills with the diffusion canvas only: set decoder to "diffusion"')
        if getattr(request, "repair_threshold", None) is not None:
            raise BadFill("repairing existing code is not available with the vLLM backend (backend: inprocess has it)")
        served = self._start(cancelled)
        try:
            return self._fill(served, request, on_step, cancelled, t0)
        except (VllmUnreachable, VllmDied):
            self._served = None  # whatever comes back at the URL is probed again
            raise

    # ---- one fill ----------------------------------------------------------------------------

    def plan(self, request: FillRequest, cancelled: Cancelled | None = None) -> FillPlan:
        """The request's canvases for the served model, planned as every backend plans them (model/plan.py)."""
        return self._plan(self._start(cancelled), request, cancelled)

    def limits(self, s: Served, settings: SamplerSettings) -> PlanLimits:
        card = self._local.card() if self._local is not None else {}
        return PlanLimits(
            canvas_length=s.width,
            max_prompt_tokens=min(self.max_prompt_tokens, int(card.get("prefix_length") or self.max_prompt_tokens)),
            suffix_tokens=self.min_suffix_tokens if settings.suffix_tokens is None else settings.suffix_tokens,
            # vLLM runs the reference sampler: a checkpoint that ends holes itself picks the length (its card says)
            one_length=bool(card.get("end_closes_hole")),
            max_model_len=s.max_model_len,
        )

    def _plan(self, s: Served, req: FillRequest, cancelled: Cancelled | None) -> FillPlan:
        limits = self.limits(s, req.settings)
        vocab = Vocab(pad=s.pad, bos=s.bos, ends=s.ends, dropped=s.dropped)
        return plan_fill(req, self._encode(s, plan_texts(req, limits), cancelled), vocab, limits)

    def _fill(
        self, s: Served, req: FillRequest, on_step: OnStep | None, cancelled: Cancelled | None, t0: float
    ) -> FillResult:
        settings = req.settings
        judge = self.make_judge(req.text, req.holes, req.language) if (req.language and self.make_judge) else None
        plan = self._plan(s, req, cancelled)
        prompt = list(plan.prompt) or [s.pad]  # vLLM needs at least one prompt token
        vocab = Vocab(pad=s.pad, bos=s.bos, ends=s.ends, dropped=s.dropped)

        def decode_many(seqs: list[list[int]]) -> list[str]:
            return self._decode(s, seqs, cancelled)

        def read(c: _Canvas) -> Candidate:
            return score_row(c.row, c.ids, c.logp, plan.layouts[c.row], vocab, decode_many)

        # Round 1: every length candidate at once, its hole slots seeded with noise, the rest pinned.
        seeds = [_seed(layout, s.vocab, settings.seed + j) for j, layout in enumerate(plan.layouts)]
        answers = self._http.complete(s.model, prompt, plan.width, settings.max_steps, seeds, cancelled)
        canvases = [
            _returned(j, seed, pins, ids, logp) for j, ((seed, pins), (ids, logp)) in enumerate(zip(seeds, answers))
        ]
        candidates = [read(c) for c in canvases]
        best, errors = choose(candidates, judge)
        if on_step is not None:
            on_step(_event(plan, best, 1, settings.max_steps or 1, 0))

        # Syntax repair: the winner's good part pinned, the rest re-seeded, one request per round.
        repair_steps = max(2, settings.max_steps // 2) if settings.max_steps else None
        for r in range(1, settings.repair_rounds + 1):
            if judge is None or errors == 0:
                break
            c = canvases[best.row]
            reopen = positions_to_reopen(c.ids, plan.layouts[c.row], judge(best.fills), vocab, decode_many)
            if not reopen:
                break
            seed, pins = _reseeded(c.ids, reopen, s.vocab, settings.seed * 1009 + r)
            ((ids, logp),) = self._http.complete(s.model, prompt, plan.width, repair_steps, [(seed, pins)], cancelled)
            new_ids, new_logp = list(c.ids), list(c.logp)
            for p in reopen:
                new_ids[p], new_logp[p] = ids[p], logp[p]
            repaired = _Canvas(c.row, new_ids, new_logp, repairs=c.repairs + 1)
            candidate = read(repaired)
            if on_step is not None:
                on_step(_event(plan, candidate, r + 1, repair_steps or 1, r))
            if judge is not None and sum(map(len, judge(candidate.fills))) > errors:
                break  # the repair made it worse: keep what we had
            canvases[c.row], candidates[c.row] = repaired, candidate
            best, errors = choose(candidates, judge)

        return FillResult(
            fills=best.fills,
            score=best.score,
            forward_passes=0,  # vLLM does not say how many denoising steps a request took
            tokens=best.tokens,
            seconds=time.perf_counter() - t0,
            canvas_length=plan.width,
            slots=plan.layouts[best.row].slots,
            candidates=len(canvases),
            repairs=canvases[best.row].repairs,
            syntax_errors=errors,
            prompt_tokens=len(prompt),
            reused_prompt_tokens=0,
        )

    # ---- tokens ------------------------------------------------------------------------------

    def _encode(self, s: Served, texts: list[str], cancelled: Cancelled | None) -> list[list[int]]:
        if self._local is not None:
            return self._local.encode(texts)
        return self._http.encode(texts, s.model, cancelled)

    def _decode(self, s: Served, seqs: list[list[int]], cancelled: Cancelled | None) -> list[str]:
        if self._local is not None:
            return self._local.decode(seqs)
        return self._http.decode(seqs, s.model, cancelled)

    # ---- first contact -------------------------------------------------------------------------

    def _start(self, cancelled: Cancelled | None) -> Served:
        served = self._served
        if served is not None:
            return served
        while not self._start_lock.acquire(timeout=POLL_S):
            if cancelled is not None and cancelled():
                raise FillCancelled()
        try:
            if self._served is None:
                self._served = self._http.run(probe(self._http, self._local, self.tokenizer_path), cancelled)
                log.info(
                    "vLLM at %s serves %s: canvas %d, max_model_len %d",
                    self.url,
                    self._served.model,
                    self._served.width,
                    self._served.max_model_len,
                )
            return self._served
        finally:
            self._start_lock.release()


def _seed(layout: RowLayout, vocab: int, seed: int) -> tuple[list[int], list[int]]:
    """(a row's seed canvas: its held ids in place, uniform noise in its hole slots; the held positions)."""
    rng = random.Random(seed)
    return [tid if tid >= 0 else rng.randrange(vocab) for tid in layout.ids], [
        p for p, h in enumerate(layout.hole) if h < 0
    ]


def _reseeded(ids: list[int], reopen: list[int], vocab: int, seed: int) -> tuple[list[int], list[int]]:
    """(a repair round's seed: the canvas with the reopened positions re-noised; every other position)."""
    rng = random.Random(seed)
    out = list(ids)
    for p in reopen:
        out[p] = rng.randrange(vocab)
    reopened = set(reopen)
    return out, [p for p in range(len(ids)) if p not in reopened]


def _returned(row: int, seed: list[int], pins: list[int], ids: list[int], logp: list[float]) -> _Canvas:
    for p in pins:
        ids[p] = seed[p]  # vLLM returns its own argmax at pinned positions
    return _Canvas(row, ids, logp)


def _event(plan: FillPlan, c: Candidate, step: int, steps: int, repair: int) -> StepEvent:
    slots = sum(plan.layouts[c.row].slots)
    return StepEvent(
        step=step, round_step=steps, round_steps=steps, repair=repair, committed=slots, slots=slots, texts=c.fills
    )
