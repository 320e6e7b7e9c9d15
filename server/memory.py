"""Give the memory of big documents back to the system when they are freed.

glibc serves a large block (over 128 KiB) with its own mmap and unmaps it on free, but each such free
also raises that threshold to the block's size (up to 32 MiB). After the first 7.5 MB document text is
freed, every later copy (one per keystroke: a change slices the text into a new string) comes from the
heap, where freed copies stay in the process: 6.6x the document's size after 30 keystrokes, 3.1x with
the threshold pinned (benchmarks/big_document.py). Pinning it is glibc's documented M_MMAP_THRESHOLD
(mallopt(3)); elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("canvas_ls.memory")

M_MMAP_THRESHOLD = -3  # from <malloc.h>
MMAP_THRESHOLD = 256 * 1024  # blocks this big or bigger are mapped on their own and unmapped on free


def pin_mmap_threshold() -> bool:
    """Pin glibc's mmap threshold (which also stops it from growing). True when it took effect."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to pin
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    log.debug("mmap threshold pinned at %d bytes: %s", MMAP_THRESHOLD, ok)
    return ok
