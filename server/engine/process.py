"""`canvas-ls engine`: one process that holds the model and serves fills to every language server.

    python -m canvas_ls.server.engine --model DIR --device cuda      (what language servers spawn)
    canvas-ls engine --model DIR --device cuda                        (the same, by hand)

Three editor windows with `engine: "shared"` load the model once: each language server attaches to the
engine for its model key (see protocol.model_key), or starts it. **One engine per model key**: the
socket's name is a hash of the key, so a server configured for another checkpoint/device/dtype/prompt
window/canvas length finds (or starts) another engine, never a wrong one; the handshake compares the full
key and answers a mismatch with a clear error.

This module is the process and socket plumbing: the asyncio side (clients, messages, idle exit, signals),
the lock file, the private socket, peer uid checks and the command line. The model is loaded with
`server.model_host.load_in_process` (so its Infiller builds syntax judges from each request's language)
and driven by scheduler.py (queue, batching, per-request steps and cancellation) on its
own model thread. The configuration is config.py.

Steps stream only to requests that asked for them (`steps: true`). Cancel answers a request at once.

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
import threading
import time
from pathlib import Path

from canvas_ls.model.interface import BadFill, FillCancelled, ModelLoadError, StepEvent
from canvas_ls.model.plan import CanvasTooSmall

from .. import __version__
from ..logs import setup_logging
from ..memory import one_arena
from ..model_host import load_in_process
from ..syntax import SUPPORTED
from .config import EngineConfig
from .protocol import (
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
    FillMsg,
    ForgetMsg,
    HelloMsg,
    HelloReplyMsg,
    Msg,
    ProtocolError,
    ResultMsg,
    StepMsg,
    encode,
    ensure_private_dir,
    peer_credentials,
    read_message,
)
from .scheduler import Answer, BatchFiller, EngineStopping, Job, Scheduler

log = logging.getLogger("canvas_ls.engine")

LOAD_ERROR_GRACE_S = 3.0  # after a failed load, answer handshakes with the error this long, then exit


class _Conn:
    def __init__(self, writer: asyncio.StreamWriter, peer: str) -> None:
        self.writer = writer
        self.peer = peer
        self.jobs: dict[int, Job] = {}  # open requests by id
        self.hello = False
        self.closed = False

    def send(self, msg: Msg) -> None:
        if self.closed:
            return
        try:
            self.writer.write(encode(msg))
        except (ConnectionError, RuntimeError, OSError):
            self.closed = True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self.writer.close()


def answer_message(id: int, answer: Answer) -> ResultMsg | ErrorMsg:
    """A scheduler Answer on the wire."""
    if answer.result is not None:
        return ResultMsg(id, answer.result, batch_requests=answer.batch_requests, queued_seconds=answer.queued_seconds)
    exc = answer.error
    if isinstance(exc, FillCancelled):
        return ErrorMsg(id, CANCELLED, "cancelled")
    if isinstance(exc, CanvasTooSmall):
        return ErrorMsg(id, CANVAS_TOO_SMALL, str(exc))
    if isinstance(exc, BadFill):
        return ErrorMsg(id, BAD_REQUEST, str(exc))
    if isinstance(exc, ModelLoadError):
        return ErrorMsg(id, MODEL_LOAD, str(exc))
    if isinstance(exc, EngineStopping):
        return ErrorMsg(id, SHUTTING_DOWN, str(exc))
    return ErrorMsg(id, INTERNAL, f"{type(exc).__name__}: {exc}")


class Engine:
    """The asyncio side of the engine: clients and their messages, model loading, idle exit."""

    def __init__(
        self, config: EngineConfig, *, filler: BatchFiller | None = None, key: list[str] | None = None
    ) -> None:
        self.config = config
        self.key = key if key is not None else config.key()
        self.filler = filler
        self.scheduler: Scheduler | None = None
        self.load_error: str | None = None
        self.conns: set[_Conn] = set()
        self.closing = False
        self.stop_reason = ""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.serving = threading.Event()  # set once the socket accepts and the model is being loaded

    # -- model --

    def _load(self) -> BatchFiller:
        t0 = time.perf_counter()
        try:
            filler = load_in_process(self.config.server_settings())
        except ModelLoadError:
            raise
        except Exception as exc:  # anything from torch/transformers: report it, do not crash silently
            raise ModelLoadError(f"{type(exc).__name__}: {exc}") from exc
        log.info("model loaded in %.1fs: %s", time.perf_counter() - t0, filler.info().describe())
        return filler  # type: ignore[return-value]  (load_in_process makes an Infiller)

    async def _start_model(self) -> None:
        if self.filler is None:
            try:
                self.filler = await asyncio.to_thread(self._load)
            except Exception as exc:
                self.load_error = str(exc)
                log.error("model not loaded: %s", exc)
                self.ready.set_result(False)
                await asyncio.sleep(LOAD_ERROR_GRACE_S)
                self.stop("model load failed")
                return
        prefix = getattr(
            self.filler, "prefix", None
        )  # the Infiller's prompt K/V cache: room for every editor's documents
        if prefix is not None:
            prefix.max_entries = max(prefix.max_entries, self.config.prefix_entries)
        self.scheduler = Scheduler(
            self.filler, batch_window_s=self.config.batch_window_ms / 1000.0, max_batch=self.config.max_batch
        ).start()
        self.ready.set_result(True)

    # -- serving --

    async def serve(self, sock: socket.socket, *, install_signals: bool = True) -> str:
        """Serve on a bound, listening socket until stopped; returns why it stopped."""
        self.loop = asyncio.get_running_loop()
        self.stopped = asyncio.Event()
        self.ready: asyncio.Future = self.loop.create_future()
        self.server = await asyncio.start_unix_server(self._handle, sock=sock)
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    self.loop.add_signal_handler(sig, self.stop, "stopped by signal")
        tasks = [asyncio.create_task(self._start_model()), asyncio.create_task(self._idle_watch())]
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
        if self.scheduler is not None:
            await asyncio.to_thread(self.scheduler.join, 5.0)  # the running batch stops within one step
            s = self.scheduler.stats
            log.info(
                "engine stopped: %s (%d batches, %d requests, %d forward passes)",
                self.stop_reason,
                s.batches,
                s.requests,
                s.forward_passes,
            )
        else:
            log.info("engine stopped: %s", self.stop_reason)
        return self.stop_reason

    def stop(self, reason: str) -> None:
        """Loop thread only. Answer every open request, say Bye, close."""
        if self.closing:
            return
        self.closing = True
        self.stop_reason = reason
        log.info("stopping: %s", reason)
        self.server.close()
        if self.scheduler is not None:  # its answers are posted to this loop before the Bye below
            self.scheduler.close(f"the canvas-ls engine (pid {os.getpid()}) stopped: {reason}")
        self.loop.call_soon(self._say_bye, "idle" if reason == "idle" else "stopped")

    def _say_bye(self, reason: str) -> None:
        for conn in list(self.conns):
            conn.send(ByeMsg(reason))
        self.stopped.set()

    async def _idle_watch(self) -> None:
        idle = self.config.idle_minutes * 60.0
        if idle <= 0:
            return
        while not self.closing:
            await asyncio.sleep(min(5.0, max(0.05, idle / 4)))
            if self.scheduler is not None and self.scheduler.idle_seconds() >= idle:
                self.stop("idle")
                return

    # -- clients --

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_credentials(writer.get_extra_info("socket"))
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
            for job in conn.jobs.values():  # the client is gone: nobody waits for these
                if self.scheduler is not None:
                    self.scheduler.cancel(job, answer=False)
            conn.jobs.clear()
            conn.close()

    async def _dispatch(self, conn: _Conn, msg: Msg) -> None:
        if isinstance(msg, HelloMsg):
            await self._hello(conn, msg)
        elif not conn.hello:
            conn.send(ErrorMsg(0, PROTOCOL, "send hello first"))
            conn.close()
        elif isinstance(msg, FillMsg):
            self._submit(conn, msg)
        elif isinstance(msg, CancelMsg):
            job = conn.jobs.get(msg.id)
            if job is not None:
                self.scheduler.cancel(job)  # answered (cancelled) through _answer
        elif isinstance(msg, ForgetMsg):
            self.scheduler.forget(msg.document)
        else:
            conn.send(ErrorMsg(0, PROTOCOL, f"unexpected message {type(msg).__name__}"))

    async def _hello(self, conn: _Conn, msg: HelloMsg) -> None:
        if msg.protocol != PROTOCOL_VERSION or list(msg.key) != list(self.key):
            conn.send(
                ErrorMsg(
                    0,
                    MISMATCH,
                    f"this engine (pid {os.getpid()}) serves protocol {PROTOCOL_VERSION}, {' '.join(self.key)}; "
                    f"the client asked for protocol {msg.protocol}, {' '.join(msg.key)}",
                )
            )
            conn.close()
            return
        ok = await asyncio.shield(self.ready)
        if not ok:
            conn.send(ErrorMsg(0, MODEL_LOAD, self.load_error or "the model could not be loaded"))
            conn.close()
            return
        conn.hello = True
        log.info("client %s attached (%s)", conn.peer, msg.client)
        conn.send(
            HelloReplyMsg(
                protocol=PROTOCOL_VERSION,
                pid=os.getpid(),
                key=list(self.key),
                info=self.filler.info(),
                version=__version__,
            )
        )

    def _submit(self, conn: _Conn, msg: FillMsg) -> None:
        if msg.id <= 0 or msg.id in conn.jobs:
            conn.send(
                ErrorMsg(msg.id, PROTOCOL, f"request id {msg.id} is not positive or already in use on this connection")
            )
            return
        language = msg.request.language
        if language is not None and language not in SUPPORTED:
            conn.send(ErrorMsg(msg.id, BAD_REQUEST, f"unsupported language {language!r}; expected one of {SUPPORTED}"))
            return
        loop = self.loop

        def on_answer(answer: Answer) -> None:  # any thread
            loop.call_soon_threadsafe(self._answer, conn, msg.id, answer)

        def on_step(event: StepEvent) -> None:  # the model thread
            loop.call_soon_threadsafe(self._step, conn, msg.id, event)

        # Answers always arrive through the loop, so the job is registered before its answer is sent.
        conn.jobs[msg.id] = self.scheduler.submit(msg.request, on_answer, on_step if msg.steps else None)

    def _answer(self, conn: _Conn, id: int, answer: Answer) -> None:
        conn.jobs.pop(id, None)
        conn.send(answer_message(id, answer))

    def _step(self, conn: _Conn, id: int, event: StepEvent) -> None:
        if id in conn.jobs:  # not answered yet (a step posted just before a cancel is dropped)
            conn.send(StepMsg(id, event))


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
    ensure_private_dir(paths.dir)
    lock_fd = acquire_lock(paths.lock)
    if lock_fd is None:
        log.info("another engine (pid %s) already serves this model key; exiting", lock_holder_pid(paths.lock))
        return 0
    sock = bind_private_socket(paths.socket)
    engine = Engine(config, key=key)
    try:
        reason = asyncio.run(engine.serve(sock))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(paths.socket)  # we hold the lock: the socket at this path is ours
        sock.close()
        with contextlib.suppress(OSError):
            os.ftruncate(lock_fd, 0)
        os.close(lock_fd)  # releases the flock
    return 1 if reason == "model load failed" else 0


class EngineThread:
    """An engine inside this process, on its own thread (benchmarks and tests), serving a given filler.

    with EngineThread(config, infiller) as et:   # et.socket, et.key
        RemoteFiller.attach(et.socket, et.key).fill(...)
    """

    def __init__(
        self, config: EngineConfig, filler: BatchFiller | None = None, *, key: list[str] | None = None
    ) -> None:
        self.config = config
        self.key = key if key is not None else config.key()
        self.paths = config.paths(self.key)
        self.socket = self.paths.socket
        self.engine = Engine(config, filler=filler, key=self.key)
        self._thread: threading.Thread | None = None
        self.reason: str | None = None

    def start(self) -> EngineThread:
        ensure_private_dir(self.paths.dir)
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

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self, reason: str = "stopped") -> None:
        if self._thread is None:
            return
        loop = self.engine.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.engine.stop, reason)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> EngineThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---- command line -----------------------------------------------------------------------------------


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    EngineConfig.add_arguments(p)
    p.add_argument("--log-file", default=None)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def engine_main(args: argparse.Namespace) -> int:
    """`canvas-ls engine ...`: run the shared engine in the foreground (logs to stderr and --log-file)."""
    one_arena()  # as `canvas-ls serve`: a forgotten document's memory goes back (server/memory.py)
    setup_logging(args.log_level, args.log_file)
    try:
        return run_engine(EngineConfig.from_args(args))
    except Exception:
        log.exception("engine failed")
        return 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="canvas-ls engine", description="The shared canvas-ls model engine (one per model key)."
    )
    add_engine_arguments(p)
    return engine_main(p.parse_args(argv))
