"""Run fills off the event loop: one model thread, one fill in flight per document.

A new request for a document cancels the one before it; `$/cancelRequest` cancels the asyncio
task awaiting the fill, and we turn that into the fill's own cancel flag, which the denoising loop
checks before every step. So a cancelled fill stops within one step and frees the model thread.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Superseded(Exception):
    """A newer request for the same document replaced this one."""


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
