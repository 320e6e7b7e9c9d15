"""How many CPU threads a fill runs on: every core while the rest of the machine leaves them free, fewer
while something else keeps cores busy.

    policy = ThreadPolicy(0)          # 0: auto; N: always N
    n = policy.choose()               # at the start of a fill, on the thread that runs it
    policy.observe(n, width, seconds) # after each decoder pass; True: contended, run the rest on fewer
    policy.verify(same)               # warm-up: whether every count computes the same logits

Why not a fixed count. On the 2-core machine a compiled `small` step on a 32 canvas takes ~31 ms on one
torch thread and ~20 ms on two (a single-line fill 300 -> 207 ms), but beside one busy process two
threads made a pass 10-30x slower: every parallel region ends at a barrier where one thread spins until
the other, preempted by the neighbour, gets its core back. So "auto" counts the cores other processes
(and the hypervisor, as steal time) used since the last look, from /proc/stat less this process's own
time, and leaves them that many cores. A load that starts mid-fill shows as a pass far slower than the
fastest one seen: the rest of the fill runs on fewer threads, and so do fills for CONTENDED_S after.

The load must never change a fill, so auto adapts only after warm-up checked that every count it may
pick computes bitwise the same prompt K/V and decoder step (`verify`). The bf16 `small` model (oneDNN
products with prepacked weights, compiled) passes on one and two threads; the tiny float32 test model
does not, and keeps `fewest`, as does any model before its warm-up. A compiled step keeps the thread
count it was compiled with (inductor writes it into its kernels), so `DecoderStep.warm_up` compiles one
variant per count `counts()` names; torch.compile's guards pick the variant of the calling thread's
count. Thread counts are per OS thread in torch (OpenMP's own setting), so a background warm-up
compiling on two threads leaves the model thread's count alone.

Without /proc (macOS, Windows), auto keeps the earlier policy: one fewer than the cores, at least one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time

import torch

MIN_WINDOW_S = 0.1  # /proc/stat counts in 10 ms ticks: a shorter window says little
IDLE_SLACK = 0.25  # cores of other use that still count as idle (daemons, the editor between keys)
CONTENDED_RATIO = 3.0  # a pass this many times slower than the fastest seen at its width: contended
CONTENDED_S = 10.0  # after a contended pass, fills run on fewer threads this long
log = logging.getLogger("canvas_ls.model.threads")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cores(cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota (a
    container started with --cpus=1 on a 2-core host gets 1: two threads there would be throttled)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        with open(cpu_max) as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return n


class CpuLoad:
    """Cores other processes kept busy, averaged over the time since the previous look (Linux only)."""

    def __init__(self, stat: str = "/proc/stat", own: str = "/proc/self/stat"):
        self._stat, self._own = stat, own
        self._last = self._read()
        self.others: float | None = None  # the latest estimate; None before a window was long enough

    def _read(self) -> tuple[float, float, float] | None:
        """(time, busy ticks of the whole machine, ticks this process used), or None without /proc."""
        try:
            with open(self._stat) as f:
                fields = [int(x) for x in f.readline().split()[1:]]
            with open(self._own) as f:
                own = f.read().rsplit(")", 1)[1].split()  # the command name may hold spaces
        except (OSError, ValueError, IndexError):
            return None
        # user nice system idle iowait irq softirq steal (guest time is already inside user)
        busy = sum(fields[:3]) + sum(fields[5:8])
        return time.monotonic(), float(busy), float(int(own[11]) + int(own[12]))  # utime + stime

    def look(self) -> float | None:
        """Update and return `others`: cores used by everything but this process since the last look
        (a look less than MIN_WINDOW_S after it keeps the previous estimate)."""
        now = self._read()
        if now is None or self._last is None:
            return None
        seconds = now[0] - self._last[0]
        if seconds < MIN_WINDOW_S:
            return self.others
        others = ((now[1] - self._last[1]) - (now[2] - self._last[2])) / _TICKS / seconds
        self.others, self._last = max(0.0, others), now
        return self.others


class ThreadPolicy:
    """The torch thread count of each fill: `threads` fixed, or 0 (auto) as the module docstring says."""

    def __init__(self, threads: int = 0, load: CpuLoad | None = None, n_cores: int | None = None):
        if threads < 0:
            raise ValueError(f"threads must be 0 (auto) or positive, got {threads}")
        self.fixed = threads or None
        self.cores = n_cores or cores()
        self.load = load if load is not None else (CpuLoad() if self.fixed is None else None)
        self.contended_until = -math.inf
        self.busy_elsewhere = False  # this process keeps a core busy itself (a background compile)
        # auto adapts only once warm-up found every count computing the same logits (`verify`)
        self.verified: bool | None = None
        self._passes: dict[tuple[int, int], tuple[float, int]] = {}  # (threads, width) -> (fastest, how many)
        self.last: int | None = None  # the count `choose` gave last

    @classmethod
    def for_device(cls, threads: int, device_type: str) -> ThreadPolicy:
        """auto adapts on a CPU; with a GPU doing the passes, the CPU's share is small: a fixed count."""
        if device_type == "cpu" or threads:
            return cls(threads)
        return cls(max(1, cores() - 1))

    @property
    def fewest(self) -> int:
        """The count under load, and the earlier fixed default: one fewer than the cores, at least 1."""
        return self.fixed or max(1, self.cores - 1)

    def counts(self) -> list[int]:
        """Every count `choose` may return with no other process taking more than one core (the
        compiled step is compiled for each), most first."""
        return [self.fixed] if self.fixed else sorted({self.cores, self.fewest}, reverse=True)

    def choose(self) -> int:
        """The count for the fill about to start (call on its thread, then torch.set_num_threads)."""
        if self.fixed:
            n = self.fixed
        else:
            held = not self.verified or self.busy_elsewhere or time.monotonic() < self.contended_until
            others = None if held or self.load is None else self.load.look()  # /proc read only when it decides
            if others is None:
                n = self.fewest
            else:  # leave other processes the cores they use, a little of one free
                n = max(1, min(self.cores, self.cores - math.ceil(others - IDLE_SLACK)))
        self.last = n
        return n

    def verify(self, same: bool) -> None:
        """What warm-up found: whether every count in `counts()` computes bitwise the same logits. Only
        then does auto adapt; else it keeps `fewest`, so that the load never changes a fill."""
        self.verified = same
        if not same:
            log.info(
                "threads auto: %s threads compute different logits here; fills keep %d", self.counts(), self.fewest
            )

    def describe(self) -> str:
        """For status: "auto (2 cores, 2 last)", "auto (2 cores, 1 until warmed up)" or the fixed count."""
        if self.fixed:
            return str(self.fixed)
        if len(self.counts()) == 1:
            return f"auto ({self.cores} cores, {self.fewest})"
        if self.verified is None:
            return f"auto ({self.cores} cores, {self.fewest} until warmed up)"
        if not self.verified:
            return f"auto ({self.cores} cores, {self.fewest}: other counts change the logits here)"
        last = f", {self.last} last" if self.last is not None else ""
        return f"auto ({self.cores} cores{last})"

    def observe(self, threads: int, width: int, seconds: float) -> bool:
        """Record a decoder pass; True when it was contended (far slower than the fastest seen on this
        many threads at this width) and the fill should go on with `fewest` threads."""
        fastest, seen = self._passes.get((threads, width), (math.inf, 0))
        self._passes[threads, width] = (min(fastest, seconds), seen + 1)
        if self.fixed or threads <= self.fewest or seen < 3 or seconds < CONTENDED_RATIO * fastest:
            return False
        self.contended_until = time.monotonic() + CONTENDED_S
        return True


@contextlib.contextmanager
def on_threads(n: int):
    """This OS thread's torch thread count set to n for the block, then back to what it was."""
    before = torch.get_num_threads()
    use_threads(n)
    try:
        yield
    finally:
        use_threads(before)


def use_threads(n: int) -> None:
    """Set this OS thread's torch thread count (a no-op when it is already n: setting it is not free)."""
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
