"""One byte budget for every cache that holds document text or anything derived from it. Plain Python.

The caches of a process (the prompt K/V per document, model/kv.py; the syntax checks' parses and
verdicts, server/syntax/) put their entries here, each with its size in bytes and the document it came
from, and share one budget (`cacheBytes`, default DEFAULT_BYTES): past it the least recently used entry
of any of them goes. Closing a document drops its entries, and those no document owns, at once
(`forget`), so a closed document leaves nothing cached behind it.

    budget = shared_budget()
    with owned_by(uri):                      # entries put meanwhile on this thread are the document's
        budget.put("parse trees", key, value, size)
    budget.get("parse trees", key)           # the value, or None (and the entry is now the newest)
    budget.forget(uri)                       # didClose

Which document an entry belongs to comes from `owned_by` (a context variable, so per thread: the server
sets it around each fill on the model thread and around each syntax question it runs off the event loop).
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

# 128 MB: the prompt K/V of about a dozen documents for the bundled model (9.4 MB each at its 768
# prompt tokens, float32), the trees of a few open documents near the tree limit (a tree takes ~45x its
# text: 11 MB for 256 KB of Python), and the syntax checks' windows (tens of KB each).
DEFAULT_BYTES = 128_000_000

_owner: contextvars.ContextVar[str | None] = contextvars.ContextVar("canvas_ls_cache_owner", default=None)


@contextlib.contextmanager
def owned_by(document: str | None) -> Iterator[None]:
    """Entries put into a budget in this block (on this thread) belong to `document`."""
    token = _owner.set(document)
    try:
        yield
    finally:
        _owner.reset(token)


def current_owner() -> str | None:
    return _owner.get()


def text_bytes(text: str | bytes) -> int:
    """What a str (or bytes) object takes in memory."""
    return sys.getsizeof(text)


@dataclass
class _Entry:
    value: Any
    size: int
    owner: str | None
    on_drop: Callable[[Any], None] | None


class CacheBudget:
    """Entries of several caches ("spaces") under one byte limit, least recently used first out."""

    def __init__(self, max_bytes: int = DEFAULT_BYTES):
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[tuple[Hashable, Hashable], _Entry] = OrderedDict()  # oldest first
        self._lock = threading.Lock()
        self.bytes = 0
        self.evicted = 0  # entries dropped to stay within the budget (not those forgotten or replaced)

    def get(self, space: Hashable, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            entry = self._entries.get((space, key))
            if entry is None:
                return default
            self._entries.move_to_end((space, key))
            return entry.value

    def __contains__(self, space_key: tuple[Hashable, Hashable]) -> bool:
        with self._lock:
            return space_key in self._entries

    def put(
        self,
        space: Hashable,
        key: Hashable,
        value: Any,
        size: int,
        *,
        owner: str | None | type[Ellipsis] = ...,
        on_drop: Callable[[Any], None] | None = None,
        max_entries: int | None = None,
    ) -> bool:
        """Keep `value` (taking `size` bytes) under (space, key), replacing what was there; owner: the
        document it belongs to (default: the one `owned_by` names). on_drop(value) runs when the entry
        is dropped for room or forgotten (not when it is replaced or popped). max_entries: the most
        entries of this space, least recently used first out. Returns False when `size` alone is more
        than the budget: then nothing is kept (an older entry under that key is dropped)."""
        who = current_owner() if owner is ... else owner
        dropped: list[_Entry] = []
        with self._lock:
            old = self._entries.pop((space, key), None)
            if old is not None:
                self.bytes -= old.size
            if size > self.max_bytes:
                return False
            self._entries[(space, key)] = _Entry(value, int(size), who, on_drop)  # type: ignore[arg-type]
            self.bytes += int(size)
            if max_entries is not None:
                mine = [k for k in self._entries if k[0] == space]
                for k in mine[: max(0, len(mine) - max_entries)]:
                    dropped.append(self._drop(k))
            dropped += self._shrink()
        _run_drops(dropped)
        return True

    def pop(self, space: Hashable, key: Hashable) -> Any:
        """Take an entry out (its on_drop does not run); its value, or None."""
        with self._lock:
            entry = self._entries.pop((space, key), None)
            if entry is None:
                return None
            self.bytes -= entry.size
            return entry.value

    def forget(self, owner: str | None) -> int:
        """Drop the entries of `owner` (a closed document) and those of no document. Returns the bytes freed."""
        return self._drop_where(lambda k, e: e.owner is None or e.owner == owner)

    def drop_space(self, space: Hashable, where: Callable[[Hashable], bool] | None = None) -> int:
        """Drop a space's entries (whose key `where` accepts). Returns the bytes freed."""
        return self._drop_where(lambda k, e: k[0] == space and (where is None or where(k[1])))

    def clear(self) -> None:
        self._drop_where(lambda k, e: True)

    def resize(self, max_bytes: int) -> None:
        with self._lock:
            self.max_bytes = int(max_bytes)
            dropped = self._shrink()
        _run_drops(dropped)

    def snapshot(self, owner: str | None | type[Ellipsis] = ...) -> dict:
        """For status: {"bytes", "maxBytes", "entries", "evicted", "spaces": {space: bytes}}; with an
        owner, only that document's entries are counted."""
        with self._lock:
            items = [(k, e) for k, e in self._entries.items() if owner is ... or e.owner == owner]
            spaces: dict[str, int] = {}
            for (space, _), e in items:
                name = str(space[0] if isinstance(space, tuple) else space)  # ("prompt K/V", n): per model
                spaces[name] = spaces.get(name, 0) + e.size
            return {
                "bytes": sum(e.size for _, e in items),
                "maxBytes": self.max_bytes,
                "entries": len(items),
                "evicted": self.evicted,
                "spaces": spaces,
            }

    # -- inside the lock --

    def _drop(self, k) -> _Entry:
        entry = self._entries.pop(k)
        self.bytes -= entry.size
        return entry

    def _shrink(self) -> list[_Entry]:
        dropped = []
        while self.bytes > self.max_bytes and self._entries:
            dropped.append(self._drop(next(iter(self._entries))))
            self.evicted += 1
        return dropped

    def _drop_where(self, test: Callable[[tuple, _Entry], bool]) -> int:
        with self._lock:
            dropped = [self._drop(k) for k, e in list(self._entries.items()) if test(k, e)]
        _run_drops(dropped)
        return sum(e.size for e in dropped)


def _run_drops(entries: list[_Entry]) -> None:
    """on_drop callbacks, run outside the budget's lock (they may take locks of their own)."""
    for e in entries:
        if e.on_drop is not None:
            e.on_drop(e.value)


_shared = CacheBudget()


def shared_budget() -> CacheBudget:
    """The process's budget: every cache of document text in this process puts its entries here."""
    return _shared
