"""The shared engine: protocol, a spawned engine process serving remote fills, batching across clients,
per-request cancellation, step streams, restart after kill -9, file permissions.

One engine process is spawned for the module (float64, so remote and in-process fills are comparable
bit for bit) and killed and restarted by the last test; the idle test runs an engine on a thread.
"""

from __future__ import annotations

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

import pytest

from canvas_ls.model.infill import FillRequest, FillResult, Infiller
from canvas_ls.model.loading import ModelLoadError
from canvas_ls.model.sampler import FillCancelled
from canvas_ls.model.settings import SamplerSettings
from canvas_ls.server.engine import EngineConfig, EngineThread, acquire_lock, lock_holder_pid
from canvas_ls.server.engine_client import EngineDied, EngineUnavailable, RemoteInfiller, connect_or_start
from canvas_ls.server.engine_protocol import (
    MESSAGE_TYPES,
    ByeMsg,
    CancelMsg,
    ErrorMsg,
    FillRequestMsg,
    ForgetMsg,
    FrameReader,
    HelloMsg,
    HelloReplyMsg,
    ModelInfo,
    ProtocolError,
    ResultMsg,
    StepMsg,
    encode,
    read_message,
)
from canvas_ls.server.pipeline import make_judge
from canvas_ls.server.settings import ServerSettings

TEXT = "def add(a, b):\n    return \n\nprint(add(1, 2))\n"
HOLE = TEXT.index("return ") + len("return ")
OTHER = "import math\n\n\ndef area(r):\n    \n"
OTHER_HOLE = len(OTHER) - 1
LONG = SamplerSettings(max_steps=40, entropy_bound=1e-6)  # one position per step: a fill that takes a while


# ---- protocol ---------------------------------------------------------------------------------------


def _examples():
    info = ModelInfo(path="/m", device="cpu", dtype="float32", noise="uniform", canvas_length=256, vocab_size=1024,
                     random_weights=True, description="m on cpu")
    return [
        HelloMsg(protocol=1, key=["a=1", "b=2"], client="test"),
        HelloReplyMsg(protocol=1, pid=42, key=["a=1"], model=info, version="0.1.0"),
        FillRequestMsg(id=7, text="x = ✓\n", holes=[(4, 5)], max_tokens=8, length_candidates=[8, 16],
                       settings=SamplerSettings(seed=3).to_dict(), cache_key="file:///x.py", lang="python", steps=True),
        CancelMsg(id=7),
        ForgetMsg(cache_key="file:///x.py"),
        StepMsg(id=7, step=3, max_steps=16, committed=5, slots=8, texts=["ab··", "·"]),
        ResultMsg(id=7, fills=["a", "b"], score=-math.inf, forward_passes=4, tokens=2, seconds=0.5, canvas_length=32,
                  slots=[8, 8], candidates=1, repairs=0, syntax_errors=0, prompt_tokens=9, reused_prompt_tokens=3,
                  batch_requests=2, queued_seconds=0.01),
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
    assert got == msgs and reader.pending_bytes == 0

    async def read_all():
        r = asyncio.StreamReader()
        r.feed_data(stream)
        r.feed_eof()
        return [await read_message(r) for _ in msgs]

    assert asyncio.run(read_all()) == msgs


def test_results_convert_exactly_and_bad_frames_are_refused():
    r = FillResult(fills=("a", ""), score=-1.25, forward_passes=3, tokens=1, seconds=0.1, canvas_length=32, slots=(8, 8),
                   candidates=1, repairs=1, syntax_errors=0, prompt_tokens=5, reused_prompt_tokens=2)
    assert ResultMsg.from_result(1, r).to_result() == r
    with pytest.raises(ProtocolError):
        FrameReader().feed((5).to_bytes(4, "big") + b"\xc1\x00\x00\x00\x00")  # 0xc1 is never valid msgpack
    with pytest.raises(ProtocolError):
        FrameReader().feed((2**31).to_bytes(4, "big"))
    with pytest.raises(ProtocolError):  # valid msgpack, unknown message type
        import msgspec

        payload = msgspec.msgpack.encode({"type": "nope"})
        FrameReader().feed(len(payload).to_bytes(4, "big") + payload)


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
    return Infiller(tiny64)  # what the engine runs, in this process: the reference


def _same(a: FillResult, b: FillResult) -> bool:
    return dataclasses.replace(a, seconds=0.0) == dataclasses.replace(b, seconds=0.0)


def _client(engine: RemoteInfiller) -> RemoteInfiller:
    """Another language server attaching to the same engine (its own connection)."""
    return RemoteInfiller.attach(engine.socket_path, engine.key)


def test_engine_files_are_private_and_a_second_client_attaches(engine, run_dir):
    assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700
    socks = list(run_dir.glob("*.sock"))
    assert len(socks) == 1 and socks[0] == engine.socket_path
    assert stat.S_ISSOCK(os.stat(socks[0]).st_mode) and stat.S_IMODE(os.stat(socks[0]).st_mode) == 0o600
    lock = socks[0].with_suffix(".lock")
    assert lock_holder_pid(lock) == engine.pid and acquire_lock(lock) is None  # held by the live engine
    loaded = engine.loaded
    assert loaded.random_weights and str(loaded.dtype) == "torch.float64" and str(loaded.device) == "cpu"
    assert f"pid {engine.pid}" in loaded.describe()
    again = connect_or_start(ServerSettings(modelPath=engine.config.model, device="cpu", dtype="float64"),
                             run_dir=str(run_dir), start_timeout=60)
    try:
        assert again.pid == engine.pid and again.restarts == 0 and not again._procs  # attached, nothing spawned
    finally:
        again.close()


def test_a_wrong_model_key_gets_a_clear_error(engine):
    with pytest.raises(ModelLoadError, match="serves"):
        RemoteInfiller.attach(engine.socket_path, engine.key[:-1] + ["canvasLength=128"])


def test_remote_fill_equals_the_in_process_fill(engine, local):
    two_holes = ((4, 7), (HOLE, HOLE))
    cases = [
        (FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=16), "python"),
        (FillRequest(TEXT, holes=two_holes, max_tokens=8, settings=SamplerSettings(seed=5)), "python"),
        (FillRequest(TEXT, holes=((HOLE, HOLE),), length_candidates=(8, 24)), None),
    ]
    for req, lang in cases:
        judge = make_judge(req.text, list(req.holes), lang) if lang else None
        got = engine.fill(req, judge=judge)
        want = local.fill(req, judge=make_judge(req.text, list(req.holes), lang) if lang else None)
        assert _same(got, want), (got, want)
    with pytest.raises(ValueError, match="unsupported language"):
        judge = make_judge(TEXT, [(HOLE, HOLE)], "python")
        judge.lang = "cobol"
        engine.fill(FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=8), judge=judge)


def _steps(infiller, req, judge=None, **kw):
    texts = []
    result = infiller.fill(req, judge=judge, on_step=lambda e: texts.append((e.step, e.committed, e.slots, tuple(e.render(0)))), **kw)
    return result, texts


def test_two_clients_share_forward_passes_and_each_gets_its_own_fill(engine, local):
    a_req = FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=16)
    b_req = FillRequest(OTHER, holes=((OTHER_HOLE, OTHER_HOLE),), max_tokens=24)
    a_alone, a_steps = _steps(local, a_req, make_judge(TEXT, [(HOLE, HOLE)], "python"))
    b_alone, b_steps = _steps(local, b_req)
    clients = [_client(engine), _client(engine)]
    out: dict = {}
    barrier = threading.Barrier(2)

    def run(name, client, req, lang):
        barrier.wait()
        out[name] = _steps(client, req, make_judge(req.text, list(req.holes), lang) if lang else None)

    threads = [threading.Thread(target=run, args=("a", clients[0], a_req, "python")),
               threading.Thread(target=run, args=("b", clients[1], b_req, None))]
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
    # Each client's step stream is its own request's (its own rows, rendered), as if it ran alone.
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
    assert [s[0] for s in got_steps] == list(range(1, got.forward_passes + 1))
    assert got_steps[-1][1] == got_steps[-1][2] and all(len(s[3]) == 2 for s in got_steps)
    # No on_step: the request says so and the engine sends no step messages.
    sent = []
    orig = engine._send
    engine._send = lambda msg: (sent.append(msg), orig(msg))[1]
    try:
        engine.fill(req)
    finally:
        engine._send = orig
    assert [m.steps for m in sent if isinstance(m, FillRequestMsg)] == [False]


def test_an_idle_engine_says_bye_and_exits(tiny_dir, tiny64, run_dir):
    config = EngineConfig(model=str(tiny_dir), device="cpu", dtype="float64", idle_minutes=0.01, run_dir=str(run_dir / "idle"))
    et = EngineThread(config, Infiller(tiny64)).start()
    try:
        client = RemoteInfiller.attach(et.socket, et.key)
        assert client.fill(FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=8)).fills
        et._thread.join(20)
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

    with pytest.raises(EngineDied, match=f"pid {old}"):
        engine.fill(FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=32, settings=LONG), on_step=kill)
    req = FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=16)
    got = engine.fill(req)
    assert engine.pid != old and engine.restarts == 1
    assert _same(got, local.fill(req))
