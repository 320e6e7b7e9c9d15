"""The shared engine: protocol, configuration, the scheduler (no sockets), a spawned engine process serving
remote fills, batching across clients, per-request cancellation, step streams, restart after kill -9,
file permissions.

One engine process is spawned for the module (float64, so remote and in-process fills are comparable
bit for bit) and killed and restarted by the last test; the idle test runs an engine on a thread.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import os
import shutil
import signal
import stat
import tempfile
import threading
import time
from pathlib import Path

import msgspec
import pytest

from canvas_ls.model.infill import Infiller
from canvas_ls.model.interface import (
    BackendDied,
    BadFill,
    FillCancelled,
    FillerInfo,
    FillRequest,
    FillResult,
    ModelLoadError,
    StepEvent,
)
from canvas_ls.model.settings import SamplerSettings
from canvas_ls.server.engine.client import EngineDied, EngineUnavailable, RemoteFiller, connect_or_start
from canvas_ls.server.engine.config import EngineConfig
from canvas_ls.server.engine.process import EngineThread, acquire_lock, add_engine_arguments, lock_holder_pid
from canvas_ls.server.engine.protocol import (
    MESSAGE_TYPES,
    ByeMsg,
    CancelMsg,
    ErrorMsg,
    FillMsg,
    ForgetMsg,
    FrameReader,
    HelloMsg,
    HelloReplyMsg,
    ProtocolError,
    ResultMsg,
    StepMsg,
    encode,
    read_message,
)
from canvas_ls.server.engine.scheduler import Answer, EngineStopping, Scheduler
from canvas_ls.server.pipeline import make_judge
from canvas_ls.server.settings import ServerSettings

TEXT = "def add(a, b):\n    return \n\nprint(add(1, 2))\n"
HOLE = TEXT.index("return ") + len("return ")
OTHER = "import math\n\n\ndef area(r):\n    \n"
OTHER_HOLE = len(OTHER) - 1
LONG = SamplerSettings(max_steps=40, entropy_bound=1e-6)  # one position per step: a fill that takes a while


# ---- protocol and configuration ---------------------------------------------------------------------


def _examples():
    info = FillerInfo(
        model="m",
        path="/m",
        device="cpu",
        dtype="float32",
        canvas_length=256,
        backend="in-process",
        random_weights=True,
        repair=True,  # the capabilities cross the wire (an engine's Infiller says what it can do)
        reproducible=True,
        left_to_right=True,
    )
    request = FillRequest(
        "x = ✓\n",
        holes=((4, 5),),
        max_tokens=8,
        length_candidates=(8, 16),
        settings=SamplerSettings(seed=3),
        document="file:///x.py",
        language="python",
        decoder="diffusion",
        single_line=True,
    )
    result = FillResult(
        fills=("a", "b"),
        score=-math.inf,
        forward_passes=4,
        tokens=2,
        seconds=0.5,
        canvas_length=32,
        slots=(8, 8),
        candidates=1,
        repairs=0,
        syntax_errors=0,
        prompt_tokens=9,
        reused_prompt_tokens=3,
    )
    return [
        HelloMsg(protocol=2, key=["a=1", "b=2"], client="test"),
        HelloReplyMsg(protocol=2, pid=42, key=["a=1"], info=info, version="0.1.0"),
        FillMsg(id=7, request=request, steps=True),
        CancelMsg(id=7),
        ForgetMsg(document="file:///x.py"),
        StepMsg(
            id=7,
            event=StepEvent(step=3, round_step=2, round_steps=8, repair=1, committed=5, slots=8, texts=("ab··", "·")),
        ),
        ResultMsg(id=7, result=result, batch_requests=2, queued_seconds=0.01),
        ErrorMsg(id=7, kind="cancelled", message="cancelled by the client"),
        ByeMsg(reason="idle"),
    ]


def test_every_message_type_round_trips_through_frames():
    msgs = _examples()
    assert {type(m) for m in msgs} == set(MESSAGE_TYPES)
    stream = b"".join(encode(m) for m in msgs)
    reader = FrameReader()
    got = []
    for i in range(0, len(stream), 7):  # frames split at arbitrary points
        got += reader.feed(stream[i : i + 7])
    assert got == msgs  # the interface's dataclasses cross exactly (score -inf, tuples, nested settings)

    async def read_all():
        r = asyncio.StreamReader()
        r.feed_data(stream)
        r.feed_eof()
        return [await read_message(r) for _ in msgs]

    assert asyncio.run(read_all()) == msgs


def test_bad_frames_are_refused():
    with pytest.raises(ProtocolError):
        FrameReader().feed((5).to_bytes(4, "big") + b"\xc1\x00\x00\x00\x00")  # 0xc1 is never valid msgpack
    with pytest.raises(ProtocolError):
        FrameReader().feed((2**31).to_bytes(4, "big"))
    payload = msgspec.msgpack.encode({"type": "nope"})  # valid msgpack, unknown message type
    with pytest.raises(ProtocolError):
        FrameReader().feed(len(payload).to_bytes(4, "big") + payload)
    fill = msgspec.msgpack.decode(encode(FillMsg(1, FillRequest("x", holes=((0, 0),))))[4:])
    fill["request"]["settings"]["max_steps"] = 0  # SamplerSettings' own checks run on decode
    payload = msgspec.msgpack.encode(fill)
    with pytest.raises(ProtocolError, match="max_steps"):
        FrameReader().feed(len(payload).to_bytes(4, "big") + payload)


def test_the_engine_config_is_declared_once():
    config = EngineConfig(
        model="/m",
        device="cpu",
        dtype="float64",
        canvas_length=128,
        threads=1,
        idle_minutes=0.5,
        batch_window_ms=2.5,
        max_batch=4,
        run_dir="/tmp/r",
    )
    p = argparse.ArgumentParser()
    add_engine_arguments(p)
    assert EngineConfig.from_args(p.parse_args(config.argv())) == config  # spawn argv -> the engine's CLI
    assert EngineConfig.from_args(p.parse_args([])) == EngineConfig()
    settings = ServerSettings(
        modelPath="/m", device="cpu", dtype="float64", canvasLength=128, threads=1, engineIdleMinutes=0.5
    )
    assert EngineConfig.from_settings(settings, batch_window_ms=2.5, max_batch=4, run_dir="/tmp/r") == config
    loaded_with = config.server_settings()  # what the engine loads its model with
    assert (loaded_with.modelPath, loaded_with.dtype, loaded_with.canvasLength, loaded_with.threads) == (
        "/m",
        "float64",
        128,
        1,
    )
    assert (
        config.key() == EngineConfig(model="/m", device="cpu", dtype="float64", canvas_length=128).key()
    )  # runtime fields are not the key
    assert "device=cuda:0" in EngineConfig(device="cuda").key() and "dtype=float32" in EngineConfig(device="cpu").key()


# ---- the scheduler, without sockets ------------------------------------------------------------------


class FakeFiller:
    """fill_batch in the Infiller's shape: request i takes len(its text) steps; batch passes = the longest."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.forgotten: list[str] = []
        self.stopped_at: list[int] = []  # the step at which a cancelled fill stopped
        self.step_hook = lambda step: None

    def info(self) -> FillerInfo:
        return FillerInfo("fake", "/fake", "cpu", "float32", 64, "in-process")

    def forget(self, document: str) -> None:
        self.forgotten.append(document)

    def fill(self, request, on_step=None, cancelled=None):
        self.calls.append(("fill", (request.text,)))
        return self._run([request], (lambda i, e: on_step(e)) if on_step else None, cancelled)[0]

    def fill_batch(self, requests, *, on_step=None, cancelled=None):
        self.calls.append(("fill_batch", tuple(r.text for r in requests)))
        return self._run(requests, on_step, cancelled)

    def _run(self, requests, on_step, cancelled):
        if any(r.text == "boom" for r in requests):
            raise RuntimeError("boom")
        passes = max(len(r.text) for r in requests)
        for step in range(1, passes + 1):
            if cancelled is not None and cancelled():
                self.stopped_at.append(step)
                raise FillCancelled()
            self.step_hook(step)
            for i, r in enumerate(requests):
                n = len(r.text)
                if on_step is not None:
                    on_step(i, StepEvent(step, min(step, n), n, 0, min(step, n), n, (r.text[: min(step, n)],)))
        return [FillResult((r.text.upper(),), 0.0, passes, len(r.text), 0.0, 32, (8,), 1, 0, 0, 1, 0) for r in requests]


class Collector:
    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.steps: list[StepEvent] = []
        self.done = threading.Event()

    def answer(self, a: Answer) -> None:
        self.answers.append(a)
        self.done.set()

    def wait(self) -> Answer:
        assert self.done.wait(10)
        return self.answers[0]


def _submit(scheduler, text, settings=None, steps=True, **kw):
    c = Collector()
    request = FillRequest(text, holes=((0, 0),), settings=settings or SamplerSettings(), **kw)
    job = scheduler.submit(request, c.answer, c.steps.append if steps else None)
    return job, c


def test_the_scheduler_batches_requests_that_share_settings_and_routes_each_its_own_steps():
    fake = FakeFiller()
    scheduler = Scheduler(fake, batch_window_s=0.3, max_batch=8).start()
    try:
        _, a = _submit(scheduler, "ab")
        _, b = _submit(scheduler, "abcd")
        _, c = _submit(scheduler, "xyz", SamplerSettings(seed=1))  # other settings: the next batch
        _, d = _submit(scheduler, "lr", decoder="autoregressive")  # left to right: alone, through fill
        assert [x.wait().result.fills for x in (a, b, c, d)] == [("AB",), ("ABCD",), ("XYZ",), ("LR",)]
        assert fake.calls == [("fill_batch", ("ab", "abcd")), ("fill", ("xyz",)), ("fill", ("lr",))]
        assert (a.answers[0].batch_requests, c.answers[0].batch_requests) == (2, 1)
        assert a.answers[0].result.forward_passes == 4  # the batch's passes
        # a's stream ends with the step that commits all its slots, as if it had run alone
        assert [(e.step, e.committed, e.texts) for e in a.steps] == [(1, 1, ("a",)), (2, 2, ("ab",))]
        assert [e.texts for e in b.steps] == [("a",), ("ab",), ("abc",), ("abcd",)]
        assert scheduler.stats.batch_sizes == [2, 1, 1] and all(len(x.answers) == 1 for x in (a, b, c, d))
        scheduler.forget("file:///a.py")
        _, e = _submit(scheduler, "e", steps=False)
        assert e.wait().result.fills == ("E",) and not e.steps and fake.forgotten == ["file:///a.py"]
        _, bad = _submit(scheduler, "x", max_tokens=0)  # answered at once with its BadFill, never queued
        assert isinstance(bad.wait().error, BadFill) and fake.calls[-1] == ("fill", ("e",))
    finally:
        scheduler.close("test over")


def test_the_scheduler_cancels_per_request_and_answers_everything_on_close():
    fake = FakeFiller()
    scheduler = Scheduler(fake, batch_window_s=0.2).start()
    stepped = threading.Event()
    release = threading.Event()

    def hook(step):
        stepped.set()
        release.wait(10)

    fake.step_hook = hook
    try:
        a_job, a = _submit(scheduler, "a" * 30)
        _, b = _submit(scheduler, "bb")
        assert stepped.wait(10)
        scheduler.cancel(a_job)  # answered at once, while its batch runs on
        assert isinstance(a.wait().error, FillCancelled)
        release.set()
        assert b.wait().result.fills == ("BB",) and b.answers[0].batch_requests == 2
        assert len(a.answers) == 1  # a's result was dropped
        # A batch whose every request is cancelled stops; a failing request does not fail its batch-mate.
        stepped.clear()
        fake.step_hook = lambda step: (stepped.set(), time.sleep(0.001))
        lone_job, lone = _submit(scheduler, "z" * 5000)
        assert stepped.wait(10)
        scheduler.cancel(lone_job)
        assert isinstance(lone.wait().error, FillCancelled)
        scheduler.forget("sync")  # handled between batches: once forgotten, the cancelled batch has stopped
        deadline = time.monotonic() + 10
        while "sync" not in fake.forgotten and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fake.stopped_at and fake.stopped_at[-1] < 5000 and len(lone.answers) == 1
        _, boom = _submit(scheduler, "boom")
        _, ok = _submit(scheduler, "ok")
        assert isinstance(boom.wait().error, RuntimeError) and ok.wait().result.fills == ("OK",)
        # close: queued and running jobs get EngineStopping; later submits too
        stepped.clear()
        release.clear()
        fake.step_hook = hook
        _, running = _submit(scheduler, "r" * 5)
        assert stepped.wait(10)
        _, queued = _submit(scheduler, "q", SamplerSettings(seed=9))
        scheduler.close("stopped by test")
        release.set()
        assert isinstance(running.wait().error, EngineStopping) and isinstance(queued.wait().error, EngineStopping)
        _, late = _submit(scheduler, "late")
        assert isinstance(late.wait().error, EngineStopping)
        scheduler.join(10)
        assert len(running.answers) == 1
    finally:
        release.set()
        scheduler.close("test over")


# ---- a spawned engine ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir():
    d = tempfile.mkdtemp(prefix="cls-", dir="/tmp")  # short: Unix socket paths are limited to 107 bytes
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def settings64(tiny_dir):
    return ServerSettings(modelPath=str(tiny_dir), device="cpu", dtype="float64")


@pytest.fixture(scope="module")
def engine(settings64, run_dir):
    """A client of the module's engine process (spawned by this very call)."""
    remote = connect_or_start(settings64, run_dir=str(run_dir), batch_window_ms=300, idle_minutes=10, start_timeout=120)
    yield remote
    remote.close()
    for lock in run_dir.glob("*.lock"):  # stop whichever engine is alive now (the last test restarts it)
        fd = acquire_lock(lock)
        if fd is not None:
            os.close(fd)
            continue
        pid = lock_holder_pid(lock)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                fd = acquire_lock(lock)
                if fd is not None:
                    os.close(fd)
                    break
                time.sleep(0.1)


@pytest.fixture(scope="module")
def local(tiny64):
    return Infiller(tiny64, make_judge=make_judge)  # what the engine runs, in this process: the reference


def _same(a: FillResult, b: FillResult) -> bool:
    # how long it took and on how many CPU threads (the engine's `threads` setting) are not the fill
    return dataclasses.replace(a, seconds=0.0, threads=0) == dataclasses.replace(b, seconds=0.0, threads=0)


def _client(engine: RemoteFiller) -> RemoteFiller:
    """Another language server attaching to the same engine (its own connection)."""
    return RemoteFiller.attach(engine.socket_path, engine.key)


def test_engine_files_are_private_and_a_second_client_attaches(engine, run_dir, settings64):
    assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700
    socks = list(run_dir.glob("*.sock"))
    assert len(socks) == 1 and socks[0] == engine.socket_path
    assert stat.S_ISSOCK(os.stat(socks[0]).st_mode) and stat.S_IMODE(os.stat(socks[0]).st_mode) == 0o600
    lock = socks[0].with_suffix(".lock")
    assert lock_holder_pid(lock) == engine.pid and acquire_lock(lock) is None  # held by the live engine
    info = engine.info()
    assert info.random_weights and info.dtype == "float64" and info.device == "cpu"
    assert info.backend == f"shared engine (pid {engine.pid})" and f"pid {engine.pid}" in info.describe()
    # the engine's Infiller can repair, but its scheduler would batch a repair with fills: not claimed
    assert info.repair is False and info.reproducible and info.left_to_right
    again = connect_or_start(settings64, run_dir=str(run_dir), start_timeout=60)
    try:
        assert again.pid == engine.pid and again.restarts == 0 and not again._procs  # attached, nothing spawned
    finally:
        again.close()


def test_a_wrong_model_key_gets_a_clear_error(engine):
    with pytest.raises(ModelLoadError, match="serves"):
        RemoteFiller.attach(engine.socket_path, engine.key[:-1] + ["canvasLength=128"])


def test_remote_fill_equals_the_in_process_fill(engine, local):
    cases = [
        FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=16, language="python"),
        FillRequest(
            TEXT, holes=((4, 7), (HOLE, HOLE)), max_tokens=8, settings=SamplerSettings(seed=5), language="python"
        ),
        FillRequest(TEXT, holes=((HOLE, HOLE),), length_candidates=(8, 24)),
        FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=6, decoder="autoregressive", single_line=True),
    ]
    for req in cases:
        got, want = engine.fill(req), local.fill(req)
        assert _same(got, want), (got, want)
    with pytest.raises(BadFill, match="unsupported language"):
        engine.fill(FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=8, language="cobol"))
    with pytest.raises(BadFill, match="outside the document"):
        engine.fill(FillRequest(TEXT, holes=((0, len(TEXT) + 1),)))


def test_forget_drops_a_documents_prompt_cache(engine):
    req = FillRequest(TEXT * 4, holes=((len(TEXT) * 4 - 1,) * 2,), max_tokens=4, document="file:///forget.py")
    first, second = engine.fill(req), engine.fill(req)
    assert first.reused_prompt_tokens == 0 and second.reused_prompt_tokens > 0
    engine.forget("file:///forget.py")
    assert engine.fill(req).reused_prompt_tokens == 0


def _steps(filler, req, **kw):
    events: list[StepEvent] = []
    result = filler.fill(req, on_step=events.append, **kw)
    return result, events


def test_two_clients_share_forward_passes_and_each_gets_its_own_fill(engine, local):
    a_req = FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=16, language="python")
    b_req = FillRequest(OTHER, holes=((OTHER_HOLE, OTHER_HOLE),), max_tokens=24)
    a_alone, a_steps = _steps(local, a_req)
    b_alone, b_steps = _steps(local, b_req)
    clients = [_client(engine), _client(engine)]
    out: dict = {}
    barrier = threading.Barrier(2)

    def run(name, client, req):
        barrier.wait()
        out[name] = _steps(client, req)

    threads = [
        threading.Thread(target=run, args=("a", clients[0], a_req)),
        threading.Thread(target=run, args=("b", clients[1], b_req)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    (a, a_seen), (b, b_seen) = out["a"], out["b"]
    assert clients[0].last_result.batch_requests == 2 and clients[1].last_result.batch_requests == 2
    # One batch: its passes are those of the longer fill, fewer than the two fills alone.
    assert a.forward_passes == b.forward_passes == max(a_alone.forward_passes, b_alone.forward_passes)
    assert a.forward_passes < a_alone.forward_passes + b_alone.forward_passes
    assert a.fills == a_alone.fills and b.fills == b_alone.fills
    assert _same(dataclasses.replace(a, forward_passes=a_alone.forward_passes), a_alone)
    # Each client's step stream is its own request's (its own rows, its canvas), as if it ran alone.
    assert a_seen == a_steps and b_seen == b_steps
    for c in clients:
        c.close()


def test_cancelling_one_request_leaves_its_batch_mate_intact(engine, local):
    a_req = FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=32, settings=LONG)
    b_req = FillRequest(OTHER, holes=((OTHER_HOLE, OTHER_HOLE),), max_tokens=16, settings=LONG)
    b_alone = local.fill(b_req)
    clients = [_client(engine), _client(engine)]
    out: dict = {}
    barrier = threading.Barrier(2)
    a_stepped = threading.Event()

    def run_a():
        barrier.wait()
        try:
            clients[0].fill(a_req, on_step=lambda e: a_stepped.set(), cancelled=a_stepped.is_set)
        except FillCancelled:
            out["a"] = "cancelled"

    def run_b():
        barrier.wait()
        out["b"] = clients[1].fill(b_req)

    threads = [threading.Thread(target=run_a), threading.Thread(target=run_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out["a"] == "cancelled"
    assert clients[1].last_result.batch_requests == 2  # b ran in a's batch ...
    b = out["b"]
    assert b.forward_passes >= b_alone.forward_passes  # the batch ran as long as its longer member
    assert _same(dataclasses.replace(b, forward_passes=b_alone.forward_passes), b_alone)  # b is exactly its fill alone
    # A lone request that is cancelled stops its batch; the engine serves the next one.
    flag = threading.Event()
    with pytest.raises(FillCancelled):
        clients[0].fill(a_req, on_step=lambda e: flag.set(), cancelled=flag.is_set)
    assert _same(clients[0].fill(b_req), b_alone)
    for c in clients:
        c.close()


def test_steps_stream_only_when_asked(engine, local):
    req = FillRequest(TEXT, holes=((4, 7), (HOLE, HOLE)), max_tokens=8)
    want, want_steps = _steps(local, req)
    got, got_steps = _steps(engine, req)
    assert _same(got, want) and got_steps == want_steps
    assert [s.step for s in got_steps] == list(range(1, got.forward_passes + 1))
    assert got_steps[-1].committed == got_steps[-1].slots and all(len(s.texts) == 2 for s in got_steps)
    # No on_step: the request says so and the engine sends no step messages.
    sent = []
    orig = engine._send
    engine._send = lambda msg: (sent.append(msg), orig(msg))[1]
    try:
        engine.fill(req)
    finally:
        engine._send = orig
    assert [m.steps for m in sent if isinstance(m, FillMsg)] == [False]


def test_an_idle_engine_says_bye_and_exits(tiny_dir, tiny64, run_dir):
    config = EngineConfig(
        model=str(tiny_dir), device="cpu", dtype="float64", idle_minutes=0.01, run_dir=str(run_dir / "idle")
    )
    et = EngineThread(config, Infiller(tiny64, make_judge=make_judge)).start()
    try:
        client = RemoteFiller.attach(et.socket, et.key)
        assert client.fill(FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=8, language="python")).fills
        et.join(20)
        assert et.reason == "idle" and not et.socket.exists()
        with pytest.raises(EngineUnavailable):  # Bye seen, connection dropped; nobody may start one here
            client.fill(FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=8))
    finally:
        et.stop()


def test_kill_9_mid_fill_gives_engine_died_and_the_next_fill_restarts_it(engine, local):
    """Last in this module: it kills the module's engine."""
    old = engine.pid

    def kill(event):
        if event.step == 1:
            os.kill(old, signal.SIGKILL)

    with pytest.raises(EngineDied, match=f"pid {old}") as died:
        engine.fill(FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=32, settings=LONG), on_step=kill)
    assert isinstance(died.value, BackendDied)  # what the language server catches: an error, never an edit
    req = FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=16, language="python")
    got = engine.fill(req)
    assert engine.pid != old and engine.restarts == 1 and engine.info().backend == f"shared engine (pid {engine.pid})"
    assert _same(got, local.fill(req))
