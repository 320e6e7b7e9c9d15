"""One fill of one document version, from the event loop to the model thread and back.

FillJobs owns the model thread: one thread (the model is not re-entrant, and fills are compute-bound),
one fill in flight per document and kind. A new request for a document cancels the one before it;
`$/cancelRequest` cancels the asyncio task awaiting the fill, and that sets the fill's own cancel flag,
which the denoising loop checks before every step. So a cancelled fill stops within one step.

A FillJob snapshots the document (uri, version, text), runs `work(filler, on_step, cancelled)` on the
model thread through FillJobs (one fill in flight per document and kind; a newer one supersedes it),
and forwards each step to the event loop: `$/progress` reports and, when asked for, `canvas/step`
notifications. Whatever happens, progress ends and a live canvas is told `done`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from lsprotocol import types as t

from canvas_ls.model.cache_budget import owned_by
from canvas_ls.model.interface import Cancelled, Filler, OnStep, StepEvent

from .pipeline import FillOutcome

log = logging.getLogger("canvas_ls.fill")

Work = Callable[[Filler, OnStep | None, Cancelled], FillOutcome]
T = TypeVar("T")


class Progress:
    """$/progress for one job, under a token the client gave or accepted (pygls' work_done_progress)."""

    # pygls registers a token when the client answers window/workDoneProgress/create, which may come
    # after the job ended; such tokens are dropped on arrival. A client that never answers would grow
    # these for ever, so only the newest KEEP are remembered (insertion-ordered dicts used as sets).
    KEEP = 256
    _unconfirmed: dict = {}
    _ended_early: dict = {}

    @classmethod
    def _remember(cls, tokens: dict, token) -> None:
        tokens[token] = None
        while len(tokens) > cls.KEEP:
            del tokens[next(iter(tokens))]

    def __init__(self, work_done_progress, token) -> None:
        self.wdp, self.token = work_done_progress, token

    @classmethod
    def create(cls, work_done_progress, token: str) -> str:
        """Ask the client to create `token`; returns it."""

        def confirmed(*args) -> None:
            cls._unconfirmed.pop(token, None)
            if token in cls._ended_early:
                cls._ended_early.pop(token, None)
                work_done_progress.tokens.pop(token, None)

        cls._remember(cls._unconfirmed, token)
        work_done_progress.create(token, callback=confirmed)
        return token

    def begin(self, title: str) -> None:
        self.wdp.begin(self.token, t.WorkDoneProgressBegin(title=title, percentage=0, cancellable=False))

    def report(self, message: str, percentage: int) -> None:
        self.wdp.report(self.token, t.WorkDoneProgressReport(message=message, percentage=percentage))

    def end(self, message: str) -> None:
        self.wdp.end(self.token, t.WorkDoneProgressEnd(message=message))
        # pygls keeps every token forever (pygls issue #607): one per command fill over a whole day.
        self.wdp.tokens.pop(self.token, None)
        if self.token in self._unconfirmed:
            self._remember(self._ended_early, self.token)


class FillJobs:
    def __init__(self) -> None:
        # One thread: the model is not re-entrant, and fills are compute-bound anyway.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="canvas-model")
        self._latest: dict[str, threading.Event] = {}
        self._ids = itertools.count(1)
        self.running = 0  # fills started and not finished (for status)

    def next_id(self) -> int:
        return next(self._ids)

    async def run(self, key: str, work: Callable[[Callable[[], bool]], T]) -> T:
        """Run work(cancelled) on the model thread; `cancelled()` turns true when superseded or cancelled."""
        previous = self._latest.get(key)
        if previous is not None:
            previous.set()
        flag = threading.Event()
        self._latest[key] = flag
        loop = asyncio.get_running_loop()
        self.running += 1
        try:
            return await loop.run_in_executor(self._pool, work, flag.is_set)
        except asyncio.CancelledError:
            flag.set()  # the client cancelled: make the model thread stop at its next step
            raise
        finally:
            self.running -= 1
            if self._latest.get(key) is flag:
                del self._latest[key]

    def submit(self, work: Callable[[], T]) -> "asyncio.Future[T]":
        """Other model-thread work (loading) in order with the fills."""
        return asyncio.get_running_loop().run_in_executor(self._pool, work)

    def shutdown(self) -> None:
        for flag in self._latest.values():
            flag.set()
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class FillJob:
    uri: str
    version: int
    text: str  # the document version the fill is computed for
    kind: str  # "inline" or "command": each kind has its own fill in flight per document
    get_filler: Callable[[], Filler]  # loads the model on the model thread if needed
    progress: Progress | None = None
    # canvas/step sender: (event, done) -> None; None when the client did not ask for the live canvas
    live: Callable[[StepEvent | None, bool], None] | None = None

    async def run(self, jobs: FillJobs, work: Work, request_id: int) -> FillOutcome:
        loop = asyncio.get_running_loop()
        on_step = self._on_step(loop) if (self.progress or self.live) else None

        def on_model_thread(cancelled: Cancelled) -> FillOutcome:
            with owned_by(self.uri):  # what the fill caches is this document's (dropped when it closes)
                return work(self.get_filler(), on_step, cancelled)

        log.info("[%d] fill %s v%s (%s)", request_id, self.uri, self.version, self.kind)
        if self.progress is not None:
            self.progress.begin("canvas-ls: filling")
        try:
            # Inline requests replace inline requests and commands replace commands: a background
            # completion must never kill a fill the user asked for explicitly.
            outcome = await jobs.run(f"{self.uri}#{self.kind}", on_model_thread)
        finally:
            if self.progress is not None:
                self.progress.end("done")
            if self.live is not None:  # tell the client to clear its live canvas, whatever the outcome
                self.live(None, True)
        r = outcome.result
        if r is not None:
            log.info(
                "[%d] %s: %d edit(s), %d passes, %.1f tokens/pass, %d syntax errors found, %.3fs %s",
                request_id,
                outcome.mode,
                len(outcome.edits),
                r.forward_passes,
                r.tokens_per_pass,
                r.errors_found,
                r.seconds,
                outcome.note,
            )
        return outcome

    def _on_step(self, loop: asyncio.AbstractEventLoop) -> OnStep:
        """Called on the model thread after every step; hands the event to the event loop."""

        def on_step(event: StepEvent) -> None:
            loop.call_soon_threadsafe(self._deliver, event)

        return on_step

    def _deliver(self, event: StepEvent) -> None:
        if self.progress is not None:
            pct = int(100 * event.committed / event.slots) if event.slots else 100
            self.progress.report(event.label, pct)
        if self.live is not None:
            self.live(event, False)
