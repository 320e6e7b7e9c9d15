"""`canvas-ls engine`: one process that holds the model and serves fills to every language server.

    python -m canvas_ls.server.engine --model DIR --device cuda      (what language servers spawn)
    canvas-ls engine --model DIR --device cuda                        (the same, once the CLI is wired)

Three editor windows with `engine: "shared"` load the model once: each language server attaches to the
engine for its model key (see engine_protocol.model_key), or starts it. **One engine per model key**: the
socket's name is a hash of the key, so a server configured for another checkpoint/device/dtype/prompt
window/canvas length finds (or starts) another engine, never a wrong one; the handshake compares the full
key and answers a mismatch with a clear error.

Scheduling. Requests wait in one queue. The scheduler waits until the oldest has waited
`--batch-window-ms` (5 ms), then takes every queued request whose sampler settings equal the oldest's
(up to `--max-batch`) and runs them as ONE `Infiller.fill_batch` call on the model thread: shared
forward passes, each request's rows masked and with its own random streams, so a batched fill equals the
same fill alone. Requests with other settings wait for the next batch. While a batch runs, new requests
queue, so under load batches form by themselves.

Cancellation is per request: a cancelled request is answered at once (`Error(id, "cancelled")`) and its
rows keep running until the batch ends (their result is dropped); the batch itself stops (within one step)
only when all its requests are cancelled or their clients are gone. (Dropping a cancelled request's rows
early, or answering a request whose rows are done before its batch-mates', needs per-row hooks in
model.sampler.denoise that do not exist yet.)

Steps stream only to requests that asked for them (`steps: true`): per request, the committed/total hole
slots of its rows and its first candidate row rendered per hole.

Life cycle: an flock'ed lock file (pid inside) makes the engine unique per key; a second engine started
for the same key exits at once (status 0). The socket is created 0600 in a 0700 directory, and peers of
another uid are refused (SO_PEERCRED). After `--idle-minutes` (30) without requests the engine says Bye
to its clients and exits; clients start a fresh one on their next fill. SIGTERM/SIGINT: queued and
running requests get `Error(id, "shutting_down")`, then Bye, then exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .engine_protocol import (
    BAD_REQUEST,
    CANCELLED,
    CANVAS_TOO_SMALL,
    INTERNAL,
    MISMATCH,
    MODEL_LOAD,
    PROTOCOL,
    PROTOCOL_VERSION,
    SHUTTING_DOWN,
    ByeMsg,
    CancelMsg,
    ErrorMsg,
    FillRequestMsg,
    ForgetMsg,
    HelloMsg,
    HelloReplyMsg,
    ModelInfo,
    Msg,
    ProtocolError,
    ResultMsg,
    StepMsg,
    encode,
    engine_paths,
    ensure_private_dir,
    model_key,
    read_message,
)

log = logging.getLogger("canvas_ls.engine")

LOAD_ERROR_GRACE_S = 3.0  # after a failed load, answer handshakes with the error this long, then exit


@dataclass
class EngineConfig:
    model: str = ""  # modelPath ("" = the bundled model, else the tiny random demo model)
    device: str = "auto"
    dtype: str = "auto"
    max_prompt_tokens: int = 1024
    canvas_length: int = 256
    idle_minutes: float = 30.0  # exit after this long without requests; 0 = never
    batch_window_ms: float = 5.0  # how long the oldest queued request waits for batch-mates
    max_batch: int = 16  # requests per fill_batch call
    prefix_entries: int = 16  # documents whose prompt K/V the engine keeps (LRU)
    run_dir: str | None = None  # default: engine_protocol.default_run_dir()
    socket: str | None = None  # default: derived from the model key inside run_dir

    def key(self) -> list[str]:
        return model_key(self.model, self.device, self.dtype, self.max_prompt_tokens, self.canvas_length)

    def paths(self, key: list[str] | None = None) -> dict[str, Path]:
        paths = engine_paths(key or self.key(), Path(self.run_dir) if self.run_dir else None)
        if self.socket:
            sock = Path(self.socket)
            paths.update(dir=sock.parent, socket=sock, lock=sock.with_name(sock.name + ".lock"), log=sock.with_name(sock.name + ".log"))
        return paths

    def argv(self) -> list[str]:
        """Command-line arguments that reproduce this config (what a client passes when spawning)."""
        out = ["--model", self.model, "--device", self.device, "--dtype", self.dtype,
               "--max-prompt-tokens", str(self.max_prompt_tokens), "--canvas-length", str(self.canvas_length),
               "--idle-minutes", str(self.idle_minutes), "--batch-window-ms", str(self.batch_window_ms),
               "--max-batch", str(self.max_batch), "--prefix-entries", str(self.prefix_entries)]
        if self.run_dir:
            out += ["--run-dir", self.run_dir]
        if self.socket:
            out += ["--socket", self.socket]
        return out


# ---- per connection and per request state --------------------------------------------------------


class _Conn:
    def __init__(self, writer: asyncio.StreamWriter, peer: str) -> None:
        self.writer = writer
        self.peer = peer
        self.jobs: dict[int, _Job] = {}
        self.hello = False
        self.closed = False

    def write(self, frame: bytes) -> None:
        if self.closed:
            return
        try:
            self.writer.write(frame)
        except (ConnectionError, RuntimeError, OSError):
            self.closed = True

    def send(self, msg: Msg) -> None:
        self.write(encode(msg))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self.writer.close()


@dataclass(eq=False)
class _Job:
    conn: _Conn
    id: int
    request: object  # model.infill.FillRequest
    lang: str | None
    steps: bool
    arrived: float
    cancelled: bool = False  # read by the model thread: the client cancelled or is gone
    finished: bool = False  # answered (result or error); later answers are dropped
    step_done: bool = False  # all its slots committed: no more step messages


@dataclass
class EngineStats:
    batches: int = 0
    requests: int = 0
    forward_passes: int = 0
    batch_sizes: list[int] = field(default_factory=list)


# ---- the engine --------------------------------------------------------------------------------


class Engine:
    """The asyncio side (clients, queue, scheduler) plus one model thread that runs the batches."""

    def __init__(self, config: EngineConfig, *, infiller=None, key: list[str] | None = None) -> None:
        self.config = config
        self.key = key if key is not None else config.key()
        self.infiller = infiller
        self.load_error: str | None = None
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="canvas-engine-model")
        self.pending: list[_Job] = []
        self.running: list[_Job] = []
        self.conns: set[_Conn] = set()
        self.busy = False
        self.closing = False
        self.stop_reason = ""
        self.stats = EngineStats()
        self.last_activity = time.monotonic()
        self._rows = None  # the running batch's rows (captured from Infiller._run), for step messages
        self.loop: asyncio.AbstractEventLoop | None = None
        self.serving = threading.Event()  # set once the socket accepts and the model is being loaded

    # -- model --

    def _load(self):
        from canvas_ls.model.loading import ModelLoadError

        from .model_host import ModelHost
        from .settings import ServerSettings

        settings = ServerSettings(
            modelPath=self.config.model, device=self.config.device, dtype=self.config.dtype,
            maxPromptTokens=self.config.max_prompt_tokens, canvasLength=self.config.canvas_length,
        )
        t0 = time.perf_counter()
        try:
            infiller = ModelHost().get(settings)
        except ModelLoadError:
            raise
        except Exception as exc:  # anything from torch/transformers: report it, do not crash silently
            raise ModelLoadError(f"{type(exc).__name__}: {exc}") from exc
        log.info("model loaded in %.1fs: %s", time.perf_counter() - t0, infiller.loaded.describe())
        return infiller

    def _prepare(self, infiller) -> None:
        prefix = getattr(infiller, "prefix", None)
        if prefix is not None and hasattr(prefix, "max_entries"):
            prefix.max_entries = max(prefix.max_entries, self.config.prefix_entries)
        # Step messages need each batch row's request and layout. Infiller keeps them private to fill_batch;
        # wrapping its _run on this instance captures them without touching model code.
        run = getattr(infiller, "_run", None)
        if run is not None:
            def _run(rows, *args, **kwargs):
                self._rows = rows
                return run(rows, *args, **kwargs)

            infiller._run = _run

    def model_info(self) -> ModelInfo:
        lm = self.infiller.loaded
        return ModelInfo(
            path=str(lm.path), device=str(lm.device), dtype=str(lm.dtype).removeprefix("torch."), noise=str(lm.noise),
            canvas_length=int(lm.canvas_length), vocab_size=int(lm.vocab_size), random_weights=bool(lm.random_weights),
            description=lm.describe(),
        )

    # -- serving --

    async def serve(self, sock: socket.socket, *, install_signals: bool = True) -> str:
        """Serve on a bound, listening socket until stopped; returns why it stopped."""
        self.loop = asyncio.get_running_loop()
        self.wake = asyncio.Event()
        self.stopped = asyncio.Event()
        self.ready: asyncio.Future = self.loop.create_future()
        self.server = await asyncio.start_unix_server(self._handle, sock=sock)
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    self.loop.add_signal_handler(sig, self.stop, "stopped by signal")
        tasks = [asyncio.create_task(self._load_then_schedule()), asyncio.create_task(self._idle_watch())]
        self.serving.set()
        log.info("engine pid %d serving %s (model key %s)", os.getpid(), sock.getsockname(), " ".join(self.key))
        await self.stopped.wait()
        for t in tasks:
            t.cancel()
        for conn in list(self.conns):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.writer.drain(), 1.0)
            conn.close()
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 1.0)
        self.pool.shutdown(wait=False, cancel_futures=True)
        log.info("engine stopped: %s (%d batches, %d requests, %d forward passes)", self.stop_reason,
                 self.stats.batches, self.stats.requests, self.stats.forward_passes)
        return self.stop_reason

    def stop(self, reason: str) -> None:
        """Loop thread only. Answer every open request, say Bye, close."""
        if self.closing:
            return
        self.closing = True
        self.stop_reason = reason
        log.info("stopping: %s", reason)
        self.server.close()
        for job in self.pending + self.running:
            self._answer(job, ErrorMsg(job.id, SHUTTING_DOWN, f"the canvas-ls engine (pid {os.getpid()}) stopped: {reason}"))
            job.cancelled = True  # the model thread stops the batch at its next step
        self.pending.clear()
        for conn in list(self.conns):
            conn.send(ByeMsg("idle" if reason == "idle" else "stopped"))
        self.wake.set()
        self.stopped.set()

    async def _load_then_schedule(self) -> None:
        if self.infiller is None:
            try:
                self.infiller = await self.loop.run_in_executor(self.pool, self._load)
            except Exception as exc:
                self.load_error = str(exc)
                log.error("model not loaded: %s", exc)
                self.ready.set_result(False)
                await asyncio.sleep(LOAD_ERROR_GRACE_S)
                self.stop("model load failed")
                return
        self._prepare(self.infiller)
        self.ready.set_result(True)
        await self._schedule()

    async def _idle_watch(self) -> None:
        idle = self.config.idle_minutes * 60.0
        if idle <= 0:
            return
        while not self.closing:
            await asyncio.sleep(min(5.0, max(0.05, idle / 4)))
            if not self.busy and not self.pending and time.monotonic() - self.last_activity >= idle:
                self.stop("idle")
                return

    # -- clients --

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        peer = _peer(sock)
        if peer is not None and peer[1] != os.getuid():
            log.warning("refused a connection from uid %d (pid %d)", peer[1], peer[0])
            writer.close()
            return
        conn = _Conn(writer, f"pid {peer[0]}" if peer else "?")
        if self.closing:
            conn.send(ByeMsg("stopped"))
            conn.close()
            return
        self.conns.add(conn)
        try:
            while not conn.closed and not self.closing:
                try:
                    msg = await read_message(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                except ProtocolError as exc:
                    conn.send(ErrorMsg(0, PROTOCOL, str(exc)))
                    break
                if self.closing:
                    break
                await self._dispatch(conn, msg)
        finally:
            self.conns.discard(conn)
            for job in list(conn.jobs.values()):  # the client is gone: nobody waits for these
                job.cancelled = True
                job.finished = True
                if job in self.pending:
                    self.pending.remove(job)
            conn.jobs.clear()
            conn.close()

    async def _dispatch(self, conn: _Conn, msg: Msg) -> None:
        if isinstance(msg, HelloMsg):
            await self._hello(conn, msg)
        elif not conn.hello:
            conn.send(ErrorMsg(0, PROTOCOL, "send hello first"))
            conn.close()
        elif isinstance(msg, FillRequestMsg):
            self._submit(conn, msg)
        elif isinstance(msg, CancelMsg):
            self._cancel(conn, msg.id)
        elif isinstance(msg, ForgetMsg):
            if self.infiller is not None and hasattr(self.infiller, "prefix"):
                self.loop.run_in_executor(self.pool, self.infiller.prefix.forget, msg.cache_key)
        else:
            conn.send(ErrorMsg(0, PROTOCOL, f"unexpected message {type(msg).__name__}"))

    async def _hello(self, conn: _Conn, msg: HelloMsg) -> None:
        if msg.protocol != PROTOCOL_VERSION or list(msg.key) != list(self.key):
            conn.send(ErrorMsg(0, MISMATCH, f"this engine (pid {os.getpid()}) serves protocol {PROTOCOL_VERSION}, {' '.join(self.key)}; "
                                            f"the client asked for protocol {msg.protocol}, {' '.join(msg.key)}"))
            conn.close()
            return
        ok = await asyncio.shield(self.ready)
        if not ok:
            conn.send(ErrorMsg(0, MODEL_LOAD, self.load_error or "the model could not be loaded"))
            conn.close()
            return
        conn.hello = True
        log.info("client %s attached (%s)", conn.peer, msg.client)
        conn.send(HelloReplyMsg(protocol=PROTOCOL_VERSION, pid=os.getpid(), key=list(self.key), model=self.model_info(), version=__version__))

    def _submit(self, conn: _Conn, msg: FillRequestMsg) -> None:
        from canvas_ls.model.infill import FillRequest
        from canvas_ls.model.settings import SamplerSettings

        if msg.id in conn.jobs:
            conn.send(ErrorMsg(msg.id, PROTOCOL, f"request id {msg.id} is already in use on this connection"))
            return
        try:
            settings = SamplerSettings(**msg.settings)
            request = FillRequest(
                text=msg.text, holes=tuple((int(a), int(b)) for a, b in msg.holes), max_tokens=int(msg.max_tokens),
                length_candidates=tuple(int(n) for n in msg.length_candidates), settings=settings, cache_key=msg.cache_key,
            )
            request.validate()
            if msg.lang is not None:
                from .syntax import SUPPORTED

                if msg.lang not in SUPPORTED:
                    raise ValueError(f"unsupported language {msg.lang!r}; expected one of {SUPPORTED}")
        except (TypeError, ValueError) as exc:
            conn.send(ErrorMsg(msg.id, BAD_REQUEST, str(exc)))
            return
        job = _Job(conn, msg.id, request, msg.lang, msg.steps, time.monotonic())
        conn.jobs[msg.id] = job
        self.pending.append(job)
        self.last_activity = time.monotonic()
        self.wake.set()

    def _cancel(self, conn: _Conn, id: int) -> None:
        job = conn.jobs.get(id)
        if job is None or job.finished:
            return
        job.cancelled = True
        if job in self.pending:
            self.pending.remove(job)
        self._answer(job, ErrorMsg(id, CANCELLED, "cancelled by the client"))

    def _answer(self, job: _Job, msg: Msg) -> None:
        """Loop thread. The one final answer of a request; later ones (a result after a cancel) are dropped."""
        if job.finished:
            return
        job.finished = True
        job.conn.jobs.pop(job.id, None)
        job.conn.send(msg)

    def _post_answer(self, job: _Job, msg: Msg) -> None:
        self.loop.call_soon_threadsafe(self._answer, job, msg)

    def _post_step(self, job: _Job, frame: bytes) -> None:
        def send() -> None:
            if not job.finished and not job.cancelled:
                job.conn.write(frame)

        self.loop.call_soon_threadsafe(send)

    # -- scheduling --

    async def _schedule(self) -> None:
        window = self.config.batch_window_ms / 1000.0
        while not self.closing:
            await self.wake.wait()
            self.wake.clear()
            while self.pending and not self.closing:
                delay = window - (time.monotonic() - self.pending[0].arrived)
                if delay > 0:
                    await asyncio.sleep(delay)  # let batch-mates arrive
                batch = self._take_batch()
                if not batch:
                    continue
                self.busy = True
                self.running = batch
                try:
                    await self.loop.run_in_executor(self.pool, self._run_batch, batch)
                except Exception:  # never let the scheduler die; _run_batch answers its own errors
                    log.exception("batch failed")
                finally:
                    self.busy = False
                    self.running = []
                    self.last_activity = time.monotonic()

    def _take_batch(self) -> list[_Job]:
        self.pending = [j for j in self.pending if not j.cancelled]
        if not self.pending:
            return []
        settings = self.pending[0].request.settings
        batch = [j for j in self.pending if j.request.settings == settings][: max(1, self.config.max_batch)]
        taken = set(map(id, batch))
        self.pending = [j for j in self.pending if id(j) not in taken]
        return batch

    def _run_batch(self, jobs: list[_Job]) -> None:
        """Model thread: one fill_batch call for jobs that share sampler settings."""
        from canvas_ls.model.canvas import CanvasTooSmall
        from canvas_ls.model.sampler import FillCancelled

        live = [j for j in jobs if not j.cancelled]
        if not live:
            return
        judges = []
        for j in live:
            if j.lang is None:
                judges.append(None)
            else:
                from .pipeline import make_judge

                judges.append(make_judge(j.request.text, list(j.request.holes), j.lang))
        started = time.monotonic()
        try:
            results = self.infiller.fill_batch(
                [j.request for j in live],
                on_step=self._step_emitter(live),
                cancelled=lambda: all(j.cancelled for j in live),
                judges=judges,
            )
        except FillCancelled:
            for j in live:
                self._post_answer(j, ErrorMsg(j.id, CANCELLED, "cancelled"))
            return
        except Exception as exc:
            if len(live) > 1:
                # One bad request must not fail its batch-mates: run each alone (before the first step
                # this costs only the prompt encodes, which the prefix cache mostly keeps).
                log.info("batch of %d failed (%s: %s); running its requests one by one", len(live), type(exc).__name__, exc)
                for j in live:
                    self._run_batch([j])
                return
            job = live[0]
            if isinstance(exc, CanvasTooSmall):
                self._post_answer(job, ErrorMsg(job.id, CANVAS_TOO_SMALL, str(exc)))
            elif isinstance(exc, ValueError):
                self._post_answer(job, ErrorMsg(job.id, BAD_REQUEST, str(exc)))
            else:
                log.exception("fill failed")
                self._post_answer(job, ErrorMsg(job.id, INTERNAL, f"{type(exc).__name__}: {exc}"))
            return
        finally:
            self._rows = None
        self.stats.batches += 1
        self.stats.requests += len(live)
        self.stats.forward_passes += results[0].forward_passes if results else 0
        self.stats.batch_sizes.append(len(live))
        for j, r in zip(live, results):
            self._post_answer(j, ResultMsg.from_result(j.id, r, batch_requests=len(live), queued_seconds=started - j.arrived))

    def _step_emitter(self, jobs: list[_Job]):
        wanted = [i for i, j in enumerate(jobs) if j.steps]
        if not wanted:
            return None
        layout: dict = {}

        def on_step(event) -> None:
            rows = self._rows
            if not layout:
                if rows is None:
                    layout["rows"] = None
                else:
                    per_request = defaultdict(list)
                    for k, r in enumerate(rows):
                        per_request[r.request].append(k)
                    layout["rows"] = rows
                    layout["per_request"] = per_request
                    layout["holes"] = [[p for p, h in enumerate(r.layout.hole) if h >= 0] for r in rows]
            canvas = event.canvas()  # one host copy per step, shared by every request's rendering
            event.canvas = lambda: canvas
            ids, open_ = canvas
            for i in wanted:
                job = jobs[i]
                if job.cancelled or job.step_done:
                    continue
                if layout["rows"] is None:  # no row information: batch totals, first row
                    committed, slots = event.committed, event.slots
                    texts = event.render(0) if event.render is not None else ()
                else:
                    ks = layout["per_request"][i]
                    holes = layout["holes"]
                    slots = sum(len(holes[k]) for k in ks)
                    committed = slots - sum(1 for k in ks for p in holes[k] if open_[k][p])
                    k0 = ks[0]
                    texts = self.infiller._render_holes(layout["rows"][k0].layout, event, k0)
                if committed >= slots:
                    job.step_done = True  # finished rows do not change while the batch goes on
                frame = encode(StepMsg(job.id, event.step, event.max_steps, committed, slots, list(texts), event.round_step, event.round_steps, event.repair))
                self._post_step(job, frame)

        return on_step


def _peer(sock: socket.socket | None) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of a Unix socket's peer, where the platform tells (Linux)."""
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return struct.unpack("3i", raw)


# ---- process plumbing ----------------------------------------------------------------------------


def acquire_lock(path: Path) -> int | None:
    """Exclusive flock on the engine's lock file (held until the process exits); None if another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def lock_holder_pid(path: Path) -> int | None:
    """The pid written in a lock file, if any (it may be stale; the flock tells whether it lives)."""
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def bind_private_socket(path: Path) -> socket.socket:
    """A listening Unix socket at `path`, mode 0600 from the start (never world-connectable)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a stale socket of a dead engine; we hold the lock, so no live engine owns it
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def run_engine(config: EngineConfig) -> int:
    """Run an engine process in the foreground. 0: stopped normally or another engine serves this key."""
    key = config.key()
    paths = config.paths(key)
    ensure_private_dir(paths["dir"])
    lock_fd = acquire_lock(paths["lock"])
    if lock_fd is None:
        log.info("another engine (pid %s) already serves this model key; exiting", lock_holder_pid(paths["lock"]))
        return 0
    sock = bind_private_socket(paths["socket"])
    engine = Engine(config, key=key)
    try:
        reason = asyncio.run(engine.serve(sock))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(paths["socket"])  # we hold the lock: the socket at this path is ours
        sock.close()
        with contextlib.suppress(OSError):
            os.ftruncate(lock_fd, 0)
        os.close(lock_fd)  # releases the flock
    return 1 if reason == "model load failed" else 0


class EngineThread:
    """An engine inside this process, on its own thread (benchmarks and tests), serving a given Infiller.

        with EngineThread(config, infiller) as et:   # et.socket, et.key
            RemoteInfiller.attach(et.socket, et.key).fill(...)
    """

    def __init__(self, config: EngineConfig, infiller=None, *, key: list[str] | None = None) -> None:
        self.config = config
        self.key = key if key is not None else config.key()
        self.paths = config.paths(self.key)
        self.socket = self.paths["socket"]
        self.engine = Engine(config, infiller=infiller, key=self.key)
        self._thread: threading.Thread | None = None
        self.reason: str | None = None

    def start(self) -> "EngineThread":
        ensure_private_dir(self.paths["dir"])
        sock = bind_private_socket(self.socket)

        def main() -> None:
            self.reason = asyncio.run(self.engine.serve(sock, install_signals=False))
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(self.socket)

        self._thread = threading.Thread(target=main, name="canvas-engine-loop", daemon=True)
        self._thread.start()
        if not self.engine.serving.wait(30):
            raise RuntimeError("engine thread did not start")
        return self

    def stop(self, reason: str = "stopped") -> None:
        if self._thread is None:
            return
        loop = self.engine.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.engine.stop, reason)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> "EngineThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---- command line -----------------------------------------------------------------------------------


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    d = EngineConfig()
    p.add_argument("--model", default=d.model, help="checkpoint directory (default: bundled, else the tiny random demo model)")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dtype", default=d.dtype, help="auto, float32, bfloat16, float16 (float64: exactness tests)")
    p.add_argument("--max-prompt-tokens", type=int, default=d.max_prompt_tokens)
    p.add_argument("--canvas-length", type=int, default=d.canvas_length)
    p.add_argument("--idle-minutes", type=float, default=d.idle_minutes, help="exit after this long without requests (0: never)")
    p.add_argument("--batch-window-ms", type=float, default=d.batch_window_ms, help="how long a request waits for batch-mates")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="most requests in one batch")
    p.add_argument("--prefix-entries", type=int, default=d.prefix_entries, help="documents whose prompt K/V stay cached")
    p.add_argument("--run-dir", default=None, help="directory for socket, lock and log (default: $XDG_RUNTIME_DIR/canvas-ls or ~/.cache/canvas-ls/run)")
    p.add_argument("--socket", default=None, help="explicit socket path (default: derived from the model key)")
    p.add_argument("--log-file", default=None)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def config_from_args(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig(
        model=args.model or "", device=args.device, dtype=args.dtype, max_prompt_tokens=args.max_prompt_tokens,
        canvas_length=args.canvas_length, idle_minutes=args.idle_minutes, batch_window_ms=args.batch_window_ms,
        max_batch=args.max_batch, prefix_entries=args.prefix_entries, run_dir=args.run_dir, socket=args.socket,
    )


def engine_main(args: argparse.Namespace) -> int:
    """`canvas-ls engine ...`: run the shared engine in the foreground (logs to stderr and --log-file)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if getattr(args, "log_file", None):
        handlers.append(logging.FileHandler(args.log_file))
    logging.basicConfig(level=args.log_level.upper(), handlers=handlers, format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    try:
        return run_engine(config_from_args(args))
    except Exception as exc:
        log.exception("engine failed: %s", exc)
        return 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="canvas-ls engine", description="The shared canvas-ls model engine (one per model key).")
    add_engine_arguments(p)
    return engine_main(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
