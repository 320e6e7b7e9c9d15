"""RemoteFiller: the `Filler` interface (model/interface.py), served by the shared engine over its Unix socket.

    filler = connect_or_start(settings)     # attach to the engine for this model key, or start it
    result = filler.fill(FillRequest(..., language="python"), on_step=..., cancelled=...)

Plain Python (no torch, no transformers): a language server with `engine: "shared"` never loads them.
`fill` blocks (call it from the language server's model thread, as in-process fills are). What crosses:
  * the request, as it is: the engine's Infiller builds the syntax judge from `request.language`;
  * step events, only when `on_step` is given: the interface's StepEvent of this request alone;
  * cancellation: `cancelled()` is polled every 20 ms; when it turns true the engine is told and
    `FillCancelled` is raised at once;
  * errors: BadFill (CanvasTooSmall included), ModelLoadError (the engine could not load its model or
    start), FillCancelled, `EngineDied` (a BackendDied: the connection broke while a fill was in flight;
    the fill is lost, never half-applied, and the next fill starts a fresh engine), `EngineError` (the
    engine raised something else).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from canvas_ls.model.interface import (
    BackendDied,
    BadFill,
    Cancelled,
    FillCancelled,
    FillerInfo,
    FillRequest,
    FillResult,
    ModelLoadError,
    OnStep,
)
from canvas_ls.model.plan import CanvasTooSmall

from .. import __version__
from ..settings import ServerSettings
from .config import EngineConfig
from .protocol import (
    BAD_REQUEST,
    CANCELLED,
    CANVAS_TOO_SMALL,
    MISMATCH,
    MODEL_LOAD,
    PROTOCOL_VERSION,
    SHUTTING_DOWN,
    ByeMsg,
    CancelMsg,
    ErrorMsg,
    FillMsg,
    ForgetMsg,
    FrameReader,
    HelloMsg,
    HelloReplyMsg,
    Msg,
    ProtocolError,
    ResultMsg,
    StepMsg,
    UnsafeRunDir,
    default_run_dir,
    encode,
    ensure_private_dir,
    peer_credentials,
    resolve_model_dir,
)

log = logging.getLogger("canvas_ls.engine_client")

POLL_S = 0.02  # how often a waiting fill checks its cancel flag
LOG_ROTATE_BYTES = 4 * 1024 * 1024


class EngineDied(BackendDied):
    """The engine exited (or the connection broke) while this fill was in flight. Nothing was applied;
    the next fill starts a fresh engine."""


class EngineError(RuntimeError):
    """The engine failed this request for a reason other than the request itself."""


class EngineUnavailable(ModelLoadError):
    """No engine listens on the socket and this client may not start one."""


class _RetrySafe(Exception):
    """The engine closed the connection on purpose (Bye) before starting this request: safe to resend."""


class _Eof(Exception):
    pass


class RemoteFiller:
    """A connection to the engine for one model key. Thread-safe; fills run one at a time per instance."""

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        socket_path: str | os.PathLike | None = None,
        key: list[str] | None = None,
        autostart: bool = True,
        start_timeout: float = 300.0,
    ) -> None:
        if config is None and (socket_path is None or key is None):
            raise ValueError("give an EngineConfig, or a socket path and a model key")
        if config is not None and not config.socket:
            # Pin what the environment would decide, so an engine we spawn serves exactly our key and paths.
            config = replace(
                config,
                model=config.model and resolve_model_dir(config.model),
                run_dir=config.run_dir or str(default_run_dir()),
            )
        self.config = config
        self.key = key if key is not None else config.key()
        paths = config.paths(self.key) if config is not None else None
        self.socket_path = Path(socket_path) if socket_path is not None else paths.socket
        self.log_path = paths.log if paths else None
        self.autostart = autostart and config is not None
        self.start_timeout = start_timeout
        self.last_result: ResultMsg | None = None  # the latest ResultMsg (batch_requests, queued_seconds)
        self.restarts = 0  # engines this client started after the first
        self.pid: int | None = None  # the engine's, once attached
        self._info: FillerInfo | None = None
        self._sock: socket.socket | None = None
        self._frames = FrameReader()
        self._bye: str | None = None
        self._ids = itertools.count(1)
        self._fill_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._procs: list[subprocess.Popen] = []
        self._started_any = False

    @classmethod
    def attach(cls, socket_path: str | os.PathLike, key: list[str]) -> RemoteFiller:
        """Connect to a running engine (never start one), e.g. an EngineThread."""
        r = cls(socket_path=socket_path, key=key, autostart=False)
        r.connect()
        return r

    # ---- the Filler interface besides fill ----

    def info(self) -> FillerInfo:
        if self._info is None:
            self.connect()
        return self._info  # type: ignore[return-value]

    def forget(self, document: str) -> None:
        """Drop a document's cached prompt K/V in the engine (fire and forget; safe from any thread)."""
        self._send_quiet(ForgetMsg(document))

    # ---- connection ----

    def connect(self) -> None:
        with self._fill_lock:
            self._ensure_connected()

    def close(self) -> None:
        """Close this client's connection (the engine keeps running for the others)."""
        self._reset()
        self._reap()

    def _reset(self) -> None:
        with self._send_lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        self._frames = FrameReader()
        self._bye = None

    def _reap(self) -> None:
        self._procs = [p for p in self._procs if p.poll() is None]

    def _log_tail(self, n: int = 15) -> str:
        if self.log_path is None:
            return ""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return ""
        return " | ".join(line.strip() for line in lines if line.strip())

    def _spawn(self) -> subprocess.Popen:
        assert self.config is not None
        paths = self.config.paths(self.key)
        ensure_private_dir(paths.dir)
        logf = paths.log
        with contextlib.suppress(OSError):
            if logf.stat().st_size > LOG_ROTATE_BYTES:
                logf.replace(logf.with_name(logf.name + ".1"))
        cmd = [sys.executable, "-m", "canvas_ls.server.engine", *self.config.argv()]
        log.info("starting the canvas-ls engine: %s (log: %s)", " ".join(cmd), logf)
        fd = os.open(logf, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, close_fds=True, start_new_session=True
            )
        except OSError as exc:
            raise ModelLoadError(f"could not start the canvas-ls engine ({cmd[0]}): {exc}") from exc
        finally:
            os.close(fd)
        self._procs.append(proc)
        if self._started_any:
            self.restarts += 1
        self._started_any = True
        return proc

    def _ensure_connected(self) -> None:
        """Connect and handshake; start the engine if none listens (and we may). Raises ModelLoadError."""
        if self._sock is not None:
            return
        self._reap()
        deadline = time.monotonic() + self.start_timeout
        proc: subprocess.Popen | None = None
        spawns = 0
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.socket_path))
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                if not self.autostart:
                    raise EngineUnavailable(f"no canvas-ls engine listens on {self.socket_path}") from exc
                if proc is None or proc.poll() is not None:
                    if proc is not None and proc.returncode != 0:
                        raise ModelLoadError(
                            f"the canvas-ls engine exited with status {proc.returncode} before serving: {self._log_tail()}"
                        )
                    if spawns >= 3:
                        raise ModelLoadError(
                            f"the canvas-ls engine did not come up after {spawns} starts: {self._log_tail()}"
                        )
                    proc = self._spawn()  # a second engine for the same key exits at once (status 0): we retry
                    spawns += 1
                if time.monotonic() > deadline:
                    raise ModelLoadError(
                        f"the canvas-ls engine did not open {self.socket_path} within {self.start_timeout:.0f}s: {self._log_tail()}"
                    )
                time.sleep(0.05)
                continue
            except OSError as exc:
                sock.close()
                raise ModelLoadError(f"cannot connect to the canvas-ls engine at {self.socket_path}: {exc}") from exc
            peer = peer_credentials(sock)
            if peer is not None and peer[1] != os.getuid():
                sock.close()
                raise ModelLoadError(f"the engine socket {self.socket_path} belongs to uid {peer[1]}, not to this user")
            try:
                reply = self._handshake(sock, deadline, proc)
            except _RetrySafe:
                sock.close()
                time.sleep(0.05)
                continue
            except BaseException:
                sock.close()
                raise
            self._sock = sock
            self._frames = FrameReader()
            self._bye = None
            self.pid = reply.pid
            # The engine's Infiller says what it can do (reproducible, left to right) and those hold here
            # too; repair does not: the scheduler batches a repair request with fills, and fill_batch
            # would fill its holes instead of repairing them.
            self._info = replace(reply.info, backend=f"shared engine (pid {reply.pid})", repair=False)
            log.info("attached to the canvas-ls engine pid %d: %s", reply.pid, self._info.describe())
            return

    def _handshake(self, sock: socket.socket, deadline: float, proc: subprocess.Popen | None) -> HelloReplyMsg:
        sock.sendall(encode(HelloMsg(PROTOCOL_VERSION, list(self.key), f"canvas-ls {__version__} pid {os.getpid()}")))
        frames = FrameReader()
        while True:
            if time.monotonic() > deadline:
                raise ModelLoadError(
                    f"the canvas-ls engine did not finish loading its model within {self.start_timeout:.0f}s"
                )
            ready, _, _ = select.select([sock], [], [], 0.2)
            if not ready:
                continue
            try:
                data = sock.recv(1 << 16)
            except ConnectionError:
                data = b""
            if not data:  # closed during the handshake: a failed load, or an engine that was stopping
                if proc is not None and proc.poll() is not None and proc.returncode != 0:
                    raise ModelLoadError(
                        f"the canvas-ls engine exited with status {proc.returncode}: {self._log_tail()}"
                    )
                raise _RetrySafe()
            for m in frames.feed(data):
                if isinstance(m, HelloReplyMsg):
                    return m
                if isinstance(m, ErrorMsg):
                    raise ModelLoadError(
                        m.message
                        if m.kind in (MODEL_LOAD, MISMATCH)
                        else f"engine handshake failed ({m.kind}): {m.message}"
                    )
                if isinstance(m, ByeMsg):
                    raise _RetrySafe()

    # ---- sending and receiving ----

    def _send(self, msg: Msg) -> None:
        frame = encode(msg)
        with self._send_lock:
            if self._sock is None:
                raise BrokenPipeError("not connected")
            self._sock.sendall(frame)

    def _send_quiet(self, msg: Msg) -> None:
        with contextlib.suppress(OSError):
            self._send(msg)

    def _recv(self, timeout: float) -> list[Msg]:
        sock = self._sock
        if sock is None:
            raise _Eof()
        try:
            ready, _, _ = select.select([sock], [], [], timeout)
            if not ready:
                return []
            data = sock.recv(1 << 20)
        except (OSError, ValueError):
            raise _Eof()
        if not data:
            raise _Eof()
        return self._frames.feed(data)

    def _check_alive(self) -> None:
        """Before sending: notice an engine that exited while we were idle, and drop its connection."""
        if self._sock is None:
            return
        try:
            while True:
                msgs = self._recv(0.0)
                if not msgs:
                    return
                for m in msgs:
                    if isinstance(m, ByeMsg):
                        self._bye = m.reason
        except (_Eof, ProtocolError):
            pid, bye = self.pid, self._bye
            self._reset()
            if bye != "idle":
                log.warning("the canvas-ls engine (pid %s) exited; starting a new one", pid)

    # ---- filling ----

    def fill(
        self, request: FillRequest, on_step: OnStep | None = None, cancelled: Cancelled | None = None
    ) -> FillResult:
        """Fill one request through the engine; the Filler contract (model/interface.py)."""
        with self._fill_lock:
            for attempt in range(2):
                if cancelled is not None and cancelled():
                    raise FillCancelled()
                self._check_alive()
                self._ensure_connected()
                rid = next(self._ids)
                try:
                    self._send(FillMsg(rid, request, steps=on_step is not None))
                except OSError:
                    pid = self.pid
                    self._reset()
                    if attempt == 0:  # it never reached a live engine: nothing ran, so resending is safe
                        log.warning("the canvas-ls engine (pid %s) is gone; starting a new one", pid)
                        continue
                    raise EngineDied(
                        f"could not send the fill to the canvas-ls engine (pid {pid}); the next fill starts a new one"
                    )
                try:
                    return self._wait(rid, on_step, cancelled)
                except _RetrySafe:
                    continue
            raise EngineDied("the canvas-ls engine closed the connection twice before starting the fill")

    def _wait(self, rid: int, on_step: OnStep | None, cancelled: Cancelled | None) -> FillResult:
        answered = False
        heard = False  # any message for this request arrived (the engine took it)
        try:
            while True:
                if cancelled is not None and cancelled():
                    self._send_quiet(CancelMsg(rid))
                    answered = True
                    raise FillCancelled()
                try:
                    msgs = self._recv(POLL_S)
                except (_Eof, ProtocolError) as exc:
                    pid, bye = self.pid, self._bye
                    self._reset()
                    answered = True
                    if bye == "idle" and not heard:
                        raise _RetrySafe() from None
                    why = f" ({exc})" if isinstance(exc, ProtocolError) else ""
                    message = f"the canvas-ls engine (pid {pid}) exited during this fill{why}; the fill was lost (nothing was applied) and the next fill starts a new engine"
                    log.warning("%s", message)
                    raise EngineDied(message) from None
                for m in msgs:
                    if isinstance(m, ByeMsg):
                        self._bye = m.reason
                        continue
                    if getattr(m, "id", None) != rid:
                        if isinstance(m, ErrorMsg) and m.id == 0:
                            answered = True
                            raise EngineError(f"canvas-ls engine: {m.kind}: {m.message}")
                        continue  # a late message for an earlier (cancelled) request
                    heard = True
                    if isinstance(m, StepMsg):
                        if on_step is not None:
                            on_step(m.event)
                    elif isinstance(m, ResultMsg):
                        answered = True
                        self.last_result = m
                        return m.result
                    elif isinstance(m, ErrorMsg):
                        answered = True
                        raise self._error(m)
        finally:
            if not answered:  # on_step raised, or the thread was interrupted: stop the engine's work
                self._send_quiet(CancelMsg(rid))

    def _error(self, m: ErrorMsg) -> Exception:
        if m.kind == CANCELLED:
            return FillCancelled()
        if m.kind == CANVAS_TOO_SMALL:
            return CanvasTooSmall(m.message)
        if m.kind == BAD_REQUEST:
            return BadFill(m.message)
        if m.kind == MODEL_LOAD:
            return ModelLoadError(m.message)
        if m.kind == SHUTTING_DOWN:
            self._reset()
            return EngineDied(
                m.message + "; the fill was lost (nothing was applied) and the next fill starts a new engine"
            )
        return EngineError(f"canvas-ls engine: {m.kind}: {m.message}")


def connect_or_start(settings: ServerSettings, *, start_timeout: float = 300.0, **engine_overrides) -> RemoteFiller:
    """Attach to the running engine for these settings' model key, or start one and wait for it.

    Raises ModelLoadError (with the engine log's tail) when the engine cannot start or load its model.
    engine_overrides: EngineConfig fields (run_dir, idle_minutes, batch_window_ms, max_batch, ...); they
    apply when this call starts the engine.
    """
    try:
        remote = RemoteFiller(EngineConfig.from_settings(settings, **engine_overrides), start_timeout=start_timeout)
        remote.connect()
    except (UnsafeRunDir, OSError) as exc:
        raise ModelLoadError(f"shared engine: {exc}") from exc
    return remote
