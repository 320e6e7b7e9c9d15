"""The shared engine's scheduler: one queue, requests batched into shared forward passes, one model thread.

    scheduler = Scheduler(infiller, batch_window_s=0.005, max_batch=16).start()
    job = scheduler.submit(request, on_answer, on_step)   # any thread; on_answer(Answer) comes exactly once
    scheduler.cancel(job)                                 # answered at once with FillCancelled
    scheduler.close("why")                                # every open job is answered with EngineStopping

No sockets here: server/engine.py carries requests in and answers out; tests drive a Scheduler directly.

Batching. The model thread waits until the oldest queued request has waited `batch_window_s`, then
takes every queued request whose sampler settings equal the oldest's (up to `max_batch`) and runs them
as ONE `fill_batch` call: shared forward passes, each request's rows masked and with its own random
streams, so a batched fill equals the same fill alone. Requests with other settings wait for the next
batch; left-to-right (autoregressive) requests run alone through `fill`. While a batch runs new requests
queue, so under load batches form by themselves. If a batch fails, its requests run again one by one,
so one bad request does not fail its batch-mates.

Steps. `fill_batch` reports each request's own StepEvent; a job's stream ends with the step that
commits all its slots, as if it had run alone (its rows idle while batch-mates go on).

Cancellation is per request: a cancelled job is answered at once and its rows keep running until the
batch ends (their result is dropped); the batch itself stops (within one step) only when all its jobs
are cancelled. (Dropping a cancelled request's rows early, or answering a request whose rows are done
before its batch-mates', needs per-row hooks in model.sampler.denoise that do not exist yet.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from canvas_ls.model.cache_budget import shared_budget
from canvas_ls.model.interface import BadFill, Cancelled, FillCancelled, Filler, FillRequest, FillResult, StepEvent

log = logging.getLogger("canvas_ls.engine")


class BatchFiller(Filler, Protocol):
    """A Filler that also fills several requests in shared forward passes (model.infill.Infiller)."""

    def fill_batch(
        self,
        requests: Sequence[FillRequest],
        *,
        on_step: Callable[[int, StepEvent], None] | None = None,
        cancelled: Cancelled | None = None,
    ) -> list[FillResult]: ...


class EngineStopping(Exception):
    """The engine stopped while the request was queued or running; nothing was filled."""


@dataclass(frozen=True)
class Answer:
    """The one answer a job gets: its result, or the error that ended it."""

    result: FillResult | None = None
    error: BaseException | None = None
    batch_requests: int = 1  # requests that shared the fill's forward passes (1: ran alone)
    queued_seconds: float = 0.0  # from submit to the start of its batch


@dataclass(eq=False)
class Job:
    request: FillRequest
    on_answer: Callable[[Answer], None]
    on_step: Callable[[StepEvent], None] | None
    arrived: float
    cancelled: bool = False  # read by the model thread: nobody waits for this job's result any more
    finished: bool = False  # answered (or dropped); later answers are not delivered
    steps_done: bool = False  # its last step was delivered


@dataclass
class SchedulerStats:
    batches: int = 0
    requests: int = 0
    forward_passes: int = 0
    batch_sizes: list[int] = field(default_factory=list)


class Scheduler:
    def __init__(self, filler: BatchFiller, *, batch_window_s: float = 0.005, max_batch: int = 16) -> None:
        self.filler = filler
        self.batch_window_s = batch_window_s
        self.max_batch = max(1, max_batch)
        self.stats = SchedulerStats()
        self._cond = threading.Condition()
        self._pending: list[Job] = []
        self._running: list[Job] = []
        self._forget: list[str] = []
        self._closed = False
        self._last_activity = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="canvas-engine-model", daemon=True)

    def start(self) -> Scheduler:
        self._thread.start()
        return self

    # ---- any thread -------------------------------------------------------------------------------

    def submit(
        self,
        request: FillRequest,
        on_answer: Callable[[Answer], None],
        on_step: Callable[[StepEvent], None] | None = None,
    ) -> Job:
        """Queue a request. Never raises: a request that cannot be filled is answered with its BadFill."""
        job = Job(request, on_answer, on_step, time.monotonic())
        try:
            request.validate()
        except BadFill as exc:
            self._answer(job, Answer(error=exc))
            return job
        with self._cond:
            if not self._closed:
                self._pending.append(job)
                self._last_activity = job.arrived
                self._cond.notify_all()
                return job
        self._answer(job, Answer(error=EngineStopping("the canvas-ls engine is stopping")))
        return job

    def cancel(self, job: Job, *, answer: bool = True) -> None:
        """Stop waiting for a job: answer it with FillCancelled now (or, answer=False, drop it silently)."""
        with self._cond:
            if job.finished:
                return
            job.cancelled = job.finished = True
            if job in self._pending:
                self._pending.remove(job)
        if answer:
            self._deliver(job, Answer(error=FillCancelled()))

    def forget(self, document: str) -> None:
        """Drop a document's cached prompt K/V (on the model thread, between batches)."""
        with self._cond:
            self._forget.append(document)
            self._cond.notify_all()

    def idle_seconds(self) -> float:
        """How long nothing was queued or running (0 while something is)."""
        with self._cond:
            if self._pending or self._running:
                return 0.0
            return time.monotonic() - self._last_activity

    def close(self, message: str) -> None:
        """Answer every queued and running job with EngineStopping(message); the model thread ends
        once the running batch notices (within one step)."""
        with self._cond:
            self._closed = True
            open_jobs = [j for j in self._pending + self._running if not j.finished]
            self._pending.clear()
            for j in open_jobs:
                j.cancelled = j.finished = True
            self._cond.notify_all()
        for j in open_jobs:
            self._deliver(j, Answer(error=EngineStopping(message)))

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ---- answers ----------------------------------------------------------------------------------

    def _answer(self, job: Job, answer: Answer) -> None:
        """The job's one answer: delivered unless it was answered (cancelled, stopped) already."""
        with self._cond:
            if job.finished:
                return
            job.finished = True
        self._deliver(job, answer)

    def _deliver(self, job: Job, answer: Answer) -> None:
        try:
            job.on_answer(answer)
        except Exception:
            log.exception("delivering an answer failed")

    def _step(self, job: Job, event: StepEvent) -> None:
        """Model thread: hand a job its own step, up to the one that commits all its slots."""
        if job.on_step is None or job.finished or job.steps_done:
            return
        job.steps_done = event.committed >= event.slots
        try:
            job.on_step(event)
        except Exception as exc:  # the job's own step handler failed: that ends the job, not its batch
            log.exception("a step handler failed")
            self.cancel(job, answer=False)
            self._deliver(job, Answer(error=exc))

    # ---- the model thread -------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                work = self._next()
                if work is None:
                    return
                batch, forget = work
                self._running = batch
            for document in forget:
                self.filler.forget(document)
                shared_budget().forget(document)  # the judges' parses and verdicts, kept for no document
            try:
                self._run(batch)
            except Exception:  # never let the model thread die; _run answers its own errors
                log.exception("batch failed")
            finally:
                with self._cond:
                    self._running = []
                    self._last_activity = time.monotonic()

    def _next(self) -> tuple[list[Job], list[str]] | None:
        """Lock held: wait for documents to forget or a batch whose window has passed; None once closed."""
        while not self._closed:
            if self._forget:
                forget, self._forget = self._forget, []
                return [], forget
            if not self._pending:
                self._cond.wait()
                continue
            delay = self.batch_window_s - (time.monotonic() - self._pending[0].arrived)
            if delay > 0:
                self._cond.wait(delay)  # let batch-mates arrive
                continue
            return self._take(), []
        return None

    def _take(self) -> list[Job]:
        first = self._pending[0].request
        if first.decoder != "diffusion":
            batch = self._pending[:1]
        else:
            batch = [
                j for j in self._pending if j.request.decoder == "diffusion" and j.request.settings == first.settings
            ]
            batch = batch[: self.max_batch]
        taken = set(map(id, batch))
        self._pending = [j for j in self._pending if id(j) not in taken]
        return batch

    def _run(self, jobs: list[Job]) -> None:
        """One fill for jobs that share sampler settings; answers every job."""
        live = [j for j in jobs if not j.cancelled]
        if not live:
            return
        started = time.monotonic()

        def cancelled() -> bool:
            return all(j.cancelled for j in live)

        try:
            if len(live) == 1:
                job = live[0]
                on_step = (lambda event: self._step(job, event)) if job.on_step is not None else None
                results = [self.filler.fill(job.request, on_step=on_step, cancelled=cancelled)]
            else:
                steps = any(j.on_step is not None for j in live)
                results = self.filler.fill_batch(
                    [j.request for j in live],
                    on_step=(lambda i, event: self._step(live[i], event)) if steps else None,
                    cancelled=cancelled,
                )
        except FillCancelled:
            for j in live:
                self._answer(j, Answer(error=FillCancelled()))
            return
        except Exception as exc:
            if len(live) > 1:
                # Before the first step this costs only the prompt encodes, which the prefix cache keeps.
                log.info(
                    "batch of %d failed (%s: %s); running its requests one by one", len(live), type(exc).__name__, exc
                )
                for j in live:
                    self._run([j])
                return
            if not isinstance(exc, BadFill):
                log.exception("fill failed")
            self._answer(live[0], Answer(error=exc))
            return
        self.stats.batches += 1
        self.stats.requests += len(live)
        self.stats.forward_passes += results[0].forward_passes
        self.stats.batch_sizes.append(len(live))
        for j, r in zip(live, results):
            self._answer(j, Answer(result=r, batch_requests=len(live), queued_seconds=started - j.arrived))
