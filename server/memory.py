"""Give the memory of big documents back to the system once it is freed.

Each keystroke in a document makes a new copy of its text (a change slices the old text into a new
string) and frees the old one. glibc serves a block over 128 KiB with its own mmap at first, but after
such a block is freed it raises that threshold to the block's size (up to 32 MiB), so later copies come
from the heap, and freed heap memory stays in the process: a 7.5 MB document cost 6.6x its size after
30 keystrokes (benchmarks/big_document.py). After a change to a big document the server asks glibc to
hand free heap pages back (malloc_trim(3)): 2.9x.

Pinning the threshold instead (mallopt M_MMAP_THRESHOLD) also worked for documents but made every fill
12% slower: each step's multi-megabyte tensors were then mapped and zero-filled afresh.

malloc_trim hands back the free pages of every arena except the free space at the top of a thread's
own arena (glibc trims that only on free(), past a threshold that has by then grown to twice the
document). Each thread that copies a big text (the model thread slicing a 7 MB document into prefix and
suffix, the executor asking a code action's question) gets an arena of its own, so a closed 7 MB
document left 7-10 MB per thread behind: 24-32 MB over the process (benchmarks/big_document.py). A
server therefore keeps one arena for all its threads (`one_arena`, mallopt M_ARENA_MAX at start, as
MALLOC_ARENA_MAX=1 does): a closed document then leaves 7 MB. The threads' mallocs take turns on
that arena's lock; the Python code around them holds the GIL anyway.
Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

BIG_TEXT = 1_000_000  # characters: a document this big has its freed copies handed back after a change
M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def _malloc_trim():
    return getattr(_libc(), "malloc_trim", None)  # not glibc (musl, macOS): nothing to trim


def one_arena() -> bool:
    """One malloc arena for every thread of this process (call before threads start). True when glibc
    took it."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None or _malloc_trim() is None:
        return False
    return bool(mallopt(M_ARENA_MAX, 1))


def release_freed_memory() -> bool:
    """Hand the heap's free pages back to the system. True when glibc did so."""
    trim = _malloc_trim()
    if trim is None:
        return False
    return bool(trim(0))


def release_if_big(text: str) -> None:
    """After a document event: hand freed pages back when the document is big enough to matter."""
    if len(text) >= BIG_TEXT:
        release_freed_memory()
