"""The torch thread count of fills (model/threads.py): auto takes every core while other processes leave
them free and fewer while they keep cores busy (read from a real /proc and from written ones), a pass
far slower than usual moves the rest of a fill to fewer threads, and the thread count never changes a
fill: one and two threads compute the same logits bitwise, eager and compiled."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest
import torch

from canvas_ls.model.infill import Infiller
from canvas_ls.model.interface import FillRequest
from canvas_ls.model.loading import load_model
from canvas_ls.model.settings import SamplerSettings
from canvas_ls.model.step import DecoderStep, cpp_compiler, decoder_logits
from canvas_ls.model.threads import CpuLoad, ThreadPolicy, cores, on_threads
from canvas_ls.model.tiny import build_random_checkpoint

DOC = "import os\n\n\ndef read(path):\n    with open(path) as f:\n        data = f.read()\n    return data\n"
HOLE = DOC.index("f.read()")
LINE = SamplerSettings(single_line_steps=8, suffix_tokens=8, single_line_decoder="diffusion")
LINUX = Path("/proc/stat").exists()


class FakeProc:
    """A /proc/stat and /proc/self/stat this test writes: the machine's busy ticks and this process's."""

    def __init__(self, root: Path):
        self.stat, self.own = root / "stat", root / "own"
        self.busy = self.mine = 0
        self.write()

    def write(self) -> None:
        # cpu user nice system idle iowait irq softirq steal guest guest_nice
        self.stat.write_text(f"cpu  {self.busy} 0 0 999999 0 0 0 0 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\n")
        fields = ["S"] + ["0"] * 10 + [str(self.mine), "0"] + ["0"] * 30
        self.own.write_text("1234 (canvas ls (x)) " + " ".join(fields) + "\n")

    def advance(self, seconds: float, others: float, mine: float) -> None:
        """Let `seconds` pass with other processes using `others` cores and this one `mine`."""
        ticks = os.sysconf("SC_CLK_TCK")
        self.busy += round((others + mine) * seconds * ticks)
        self.mine += round(mine * seconds * ticks)
        self.write()
        time.sleep(seconds)


def test_auto_leaves_other_processes_the_cores_they_use(tmp_path):
    proc = FakeProc(tmp_path)
    policy = ThreadPolicy(0, load=CpuLoad(str(proc.stat), str(proc.own)), n_cores=2)
    assert policy.counts() == [2, 1]
    proc.advance(0.15, others=0.05, mine=0.9)  # this process busy (a fill), the rest idle
    assert policy.choose() == 1  # not verified yet: before warm-up, auto keeps one core free
    policy.verify(False)  # the counts computed different logits: the load must not change fills
    proc.advance(0.15, others=0.0, mine=0.0)
    assert policy.choose() == 1 and "change the logits" in policy.describe()
    policy.verify(True)
    proc.advance(0.15, others=0.05, mine=0.9)
    assert policy.choose() == 2
    proc.advance(0.15, others=1.0, mine=0.0)  # a build on the other core
    assert policy.choose() == 1
    assert policy.choose() == 1  # a look right after the last one keeps its estimate
    proc.advance(0.15, others=0.1, mine=0.0)
    assert policy.choose() == 2
    policy.busy_elsewhere = True  # this process compiles on a thread of its own
    assert policy.choose() == 1
    policy.busy_elsewhere = False
    # More cores: leave as many as the others use; never below one.
    wide = ThreadPolicy(0, load=CpuLoad(str(proc.stat), str(proc.own)), n_cores=8)
    wide.verify(True)
    proc.advance(0.15, others=2.5, mine=0.0)
    assert wide.choose() == 5 and wide.counts() == [8, 7]
    proc.advance(0.15, others=12.0, mine=0.0)
    assert wide.choose() == 1
    # A fixed count never looks.
    fixed = ThreadPolicy(3, n_cores=2)
    assert fixed.choose() == 3 and fixed.counts() == [3] and fixed.load is None
    with pytest.raises(ValueError):
        ThreadPolicy(-1)


def test_without_proc_auto_keeps_one_core_free(tmp_path):
    policy = ThreadPolicy(0, load=CpuLoad(str(tmp_path / "none"), str(tmp_path / "none")), n_cores=4)
    policy.verify(True)
    assert policy.choose() == 3
    assert ThreadPolicy(0, load=CpuLoad(str(tmp_path / "none"), str(tmp_path / "none")), n_cores=1).choose() == 1


def test_a_container_cpu_quota_caps_the_cores(tmp_path):
    quota = tmp_path / "cpu.max"
    quota.write_text("100000 100000\n")  # docker --cpus=1
    assert cores(str(quota)) == 1
    quota.write_text("150000 100000\n")  # --cpus=1.5: a second thread may run half the time
    assert cores(str(quota)) == min(2, cores(str(tmp_path / "none")))
    quota.write_text("max 100000\n")
    assert cores(str(quota)) == cores(str(tmp_path / "none")) >= 1


def test_a_pass_far_slower_than_usual_means_a_load_came_up(tmp_path):
    proc = FakeProc(tmp_path)
    policy = ThreadPolicy(0, load=CpuLoad(str(proc.stat), str(proc.own)), n_cores=2)
    policy.verify(True)
    for _ in range(4):
        assert not policy.observe(2, 32, 0.020)
    assert not policy.observe(2, 32, 0.050)  # slower, not contended
    assert not policy.observe(2, 64, 0.200)  # another width: nothing seen there yet
    assert not policy.observe(1, 32, 0.500)  # already on the fewest threads
    assert policy.observe(2, 32, 0.090)
    proc.advance(0.15, others=0.0, mine=0.0)
    assert policy.choose() == 1  # for CONTENDED_S after it, even on an idle machine


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _busy_ticks() -> int:
    """The whole machine's busy ticks, as CpuLoad counts them."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:3]) + sum(fields[5:8])


def _process_ticks(pid: int | str = "self") -> int:
    """A process's user + system ticks."""
    own = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(own[11]) + int(own[12])


@pytest.mark.skipif(not LINUX, reason="reads /proc")
def test_the_real_proc_shows_a_busy_neighbour_and_not_this_process():
    """The real /proc, on a machine that may be busy with anything: each estimate is checked against what
    /proc says over the same window. This process's own work is left out (the estimate is the machine's
    busy time less this process's, which is most of a core here), and a neighbour's is counted."""
    ticks = os.sysconf("SC_CLK_TCK")
    load = CpuLoad()
    for _ in range(3):
        machine, mine, t0 = _busy_ticks(), _process_ticks(), time.monotonic()
        load.look()  # the window starts now
        _spin(0.5)
        others = load.look()
        seconds = time.monotonic() - t0
        busy, own = (_busy_ticks() - machine) / ticks / seconds, (_process_ticks() - mine) / ticks / seconds
        assert own > 0.25, own  # this process was busy (slack: a loaded machine gives it part of a core)
        assert others == pytest.approx(max(0.0, busy - own), abs=0.2), (others, busy, own)
    neighbour = mp.get_context("spawn").Process(target=_spin, args=(3.0,))
    neighbour.start()
    try:
        time.sleep(0.8)  # its start-up
        theirs, t0 = _process_ticks(neighbour.pid), time.monotonic()
        load.look()
        time.sleep(0.6)
        others = load.look()
        share = (_process_ticks(neighbour.pid) - theirs) / ticks / (time.monotonic() - t0)
        assert share > 0.25, share  # it ran (a loaded machine gives it part of a core)
        assert others >= share - 0.2, (others, share)  # counted among the others
    finally:
        neighbour.join()


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A random `toy` preset model in bf16 (hidden 128, vocab 4096): big enough that two threads split
    its products and kernels, with its weights prepacked as the `small` model's are."""
    return load_model(build_random_checkpoint(tmp_path_factory.mktemp("toy") / "model", preset="toy"), dtype="bfloat16")


def _inputs(inf: Infiller, width: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    state = inf.prefix.encode(inf.prompt_ids(DOC[:HOLE]))
    cache, masks, lengths = inf.prefix.decoder_cache([state], width)
    canvas = torch.randint(4, inf.loaded.vocab_size, (1, width), generator=gen)
    positions = lengths[:, None] + torch.arange(width)[None]
    keep = torch.ones(1, width, dtype=torch.bool)
    keep[:, width - 8 :] = False
    sc = torch.randn(1, width, inf.loaded.vocab_size, generator=gen) * 3
    return canvas, sc, keep, cache, positions, masks


def _on_threads(n: int, fn):
    with on_threads(n):
        return fn()


@pytest.mark.skipif(cpp_compiler() is None, reason="no C++ compiler: torch.compile cannot run here")
@pytest.mark.skipif(cores() < 2, reason="one core: there is no second thread count")
def test_one_and_two_threads_compute_the_same_logits_eager_and_compiled(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    inf = Infiller(toy, threads=0)
    step = DecoderStep(toy.model, compile="on")
    assert step.warm_up([inf.warmer.step_example(32, with_sc=True)], [2, 1]) and step.status == "compiled"
    with torch.inference_mode():
        for width, seed in ((32, 0), (64, 1)):
            args = _inputs(inf, width, seed)
            eager = [_on_threads(n, lambda: decoder_logits(toy.model, *args)) for n in (1, 2)]
            assert torch.equal(eager[0], eager[1])
            calls = step.compiled_calls
            compiled = [_on_threads(n, lambda: step(*args)) for n in (1, 2)]
            assert step.compiled_calls == calls + 2  # each count had its variant: no eager fallback
            assert torch.equal(compiled[0], compiled[1])
        keys = [_on_threads(n, lambda: inf.prefix.encode(inf.prompt_ids(DOC[:HOLE])).keys) for n in (1, 2)]
        assert all(torch.equal(a, b) for a, b in zip(*keys))
    # Warm-up checks the counts on a prompt as long as fills get: auto adapts only if one and two threads
    # encode it bitwise alike (on a short prompt they do; on a long one some machines' products differ, and
    # then every fill keeps one thread, so the load never changes a fill).
    assert inf.threads.verified is None
    inf.warm_up(LINE)
    alike = inf.warmer._same_on_every_count()  # the long prompt's K/V and steps at widths 32 and 64
    assert inf.threads.verified is alike
    if alike:
        assert inf.threads.describe() == f"auto ({inf.threads.cores} cores)"
    else:
        assert inf.threads.choose() == inf.threads.fewest
    # A whole fill, on one thread and on two.
    req = FillRequest(DOC, holes=((HOLE, HOLE + 8),), max_tokens=16, settings=LINE, single_line=True)
    fills = []
    for n in (1, 2):
        one = Infiller(toy, threads=n)
        result = one.fill(req)
        assert result.threads == n
        fills.append((result.fills, result.score))
    assert fills[0] == fills[1]
