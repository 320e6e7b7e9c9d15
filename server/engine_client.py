"""RemoteInfiller: the `Infiller.fill` interface, served by the shared engine over its Unix socket.

    infiller = connect_or_start(settings)     # attach to the engine for this model key, or start it
    result = infiller.fill(request, on_step=..., cancelled=..., judge=make_judge(text, holes, lang))

`fill` blocks (call it from the language server's model thread, as in-process fills are). What crosses:
  * the request, and the judge as its language: the engine rebuilds it with
    `server.pipeline.make_judge(text, holes, lang)` (judges from make_judge carry `.lang`; another callable
    cannot cross a process, so the fill then runs without syntax repair, with a warning in the log);
  * step events, only when `on_step` is given: `RemoteStepEvent` has step/max_steps/committed/slots,
    `render(row)` (the per-hole texts of the request's first candidate row) and a settable `holes`;
    `canvas()` (token ids) stays in the engine;
  * cancellation: `cancelled()` is polled every 20 ms; when it turns true the engine is told and
    `FillCancelled` is raised at once;
  * errors: CanvasTooSmall, ValueError (bad request), ModelLoadError (the engine could not load its
    model or start), FillCancelled, `EngineDied` (the connection broke while a fill was in flight: the
    fill is lost, never half-applied; the next fill starts a fresh engine), `EngineError` (the engine
    raised something else).

What the server reads besides `fill`: `.loaded.path`, `.loaded.device`, `.loaded.dtype`,
`.loaded.random_weights`, `.loaded.canvas_length`, `.loaded.describe()`, `.prefix.forget(key)`,
`.pid`, and `.on_event` (a callable(str) told when the engine died or was restarted; default: log).
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
from dataclasses import dataclass, replace
from pathlib import Path

from . import __version__
from .engine import EngineConfig, _peer
from .engine_protocol import (
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
    FillRequestMsg,
    ForgetMsg,
    FrameReader,
    HelloMsg,
    HelloReplyMsg,
    Msg,
    ProtocolError,
    ResultMsg,
    StepMsg,
    default_run_dir,
    encode,
    ensure_private_dir,
    normalize_device,
)

log = logging.getLogger("canvas_ls.engine_client")

POLL_S = 0.02  # how often a waiting fill checks its cancel flag
LOG_ROTATE_BYTES = 4 * 1024 * 1024


class EngineDied(RuntimeError):
    """The engine exited (or the connection broke) while this fill was in flight. Nothing was applied;
    the next fill starts a fresh engine."""


class EngineError(RuntimeError):
    """The engine failed this request for a reason other than the request itself."""


class EngineUnavailable(RuntimeError):
    """No engine listens on the socket and this client may not start one."""


class _RetrySafe(Exception):
    """The engine closed the connection on purpose (Bye) before starting this request: safe to resend."""


class _Eof(Exception):
    pass


@dataclass
class RemoteLoaded:
    """The engine's model, as the server reads it (a subset of model.loading.LoadedModel)."""

    path: Path
    device: object  # torch.device
    dtype: object  # torch.dtype
    noise: str
    canvas_length: int
    vocab_size: int
    random_weights: bool
    description: str
    pid: int

    def describe(self) -> str:
        return f"{self.description} [shared engine, pid {self.pid}]"


class RemoteStepEvent:
    """What on_step receives for a remote fill (the fields of model.sampler.StepEvent that cross)."""

    def __init__(self, step: int, max_steps: int, committed: int, slots: int, texts: tuple[str, ...], round_step: int = 0, round_steps: int = 0, repair: int = 0) -> None:
        self.step, self.max_steps, self.committed, self.slots = step, max_steps, committed, slots
        self.round_step, self.round_steps, self.repair = round_step, round_steps, repair
        self.texts = texts
        self.holes: tuple[tuple[int, int], ...] = ()  # set by the pipeline, as for StepEvent
        self.render = lambda row=0: self.texts

    def canvas(self):
        raise NotImplementedError("a remote step carries rendered texts only (render()); the canvas ids stay in the engine")

    def __repr__(self) -> str:
        return f"RemoteStepEvent(step={self.step}, max_steps={self.max_steps}, committed={self.committed}, slots={self.slots})"


class _RemotePrefix:
    def __init__(self, owner: "RemoteInfiller") -> None:
        self._owner = owner

    def forget(self, key: str) -> None:
        """Drop a document's cached prompt K/V in the engine (fire and forget; safe from any thread)."""
        self._owner._send_quiet(ForgetMsg(key))

    def clear(self) -> None:  # the engine's cache is shared by every client: nothing to clear from here
        pass


def _to_loaded(reply: HelloReplyMsg) -> RemoteLoaded:
    import torch

    m = reply.model
    return RemoteLoaded(
        path=Path(m.path), device=torch.device(m.device), dtype=getattr(torch, m.dtype, m.dtype), noise=m.noise,
        canvas_length=m.canvas_length, vocab_size=m.vocab_size, random_weights=m.random_weights,
        description=m.description, pid=reply.pid,
    )


class RemoteInfiller:
    """A connection to the engine for one model key. Thread-safe; fills run one at a time per instance."""

    def __init__(self, config: EngineConfig | None = None, *, socket_path: str | os.PathLike | None = None,
                 key: list[str] | None = None, autostart: bool = True, start_timeout: float = 300.0) -> None:
        if config is None and (socket_path is None or key is None):
            raise ValueError("give an EngineConfig, or a socket path and a model key")
        if config is not None:
            config = replace(config, device=normalize_device(config.device),
                             run_dir=str(config.run_dir) if config.run_dir else str(default_run_dir()))
        self.config = config
        self.key = key if key is not None else config.key()
        paths = config.paths(self.key) if config is not None else None
        self.socket_path = Path(socket_path) if socket_path is not None else paths["socket"]
        self.log_path = paths["log"] if paths else None
        self.autostart = autostart and config is not None
        self.start_timeout = start_timeout
        self.prefix = _RemotePrefix(self)
        self.on_event = lambda message: log.warning("%s", message)
        self.last_result: ResultMsg | None = None  # the latest ResultMsg (batch_requests, queued_seconds)
        self.restarts = 0  # engines this client started after the first
        self._sock: socket.socket | None = None
        self._frames = FrameReader()
        self._loaded: RemoteLoaded | None = None
        self._bye: str | None = None
        self._ids = itertools.count(1)
        self._fill_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._procs: list[subprocess.Popen] = []
        self._started_any = False
        self._warned_judge = False

    @classmethod
    def attach(cls, socket_path: str | os.PathLike, key: list[str]) -> "RemoteInfiller":
        """Connect to a running engine (never start one), e.g. an EngineThread."""
        r = cls(socket_path=socket_path, key=key, autostart=False)
        r.connect()
        return r

    # ---- what the server reads ----

    @property
    def loaded(self) -> RemoteLoaded:
        if self._loaded is None:
            self.connect()
        return self._loaded  # type: ignore[return-value]

    @property
    def pid(self) -> int | None:
        return self._loaded.pid if self._loaded else None

    @property
    def connected(self) -> bool:
        return self._sock is not None

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
        return " | ".join(l.strip() for l in lines if l.strip())

    def _spawn(self) -> subprocess.Popen:
        from canvas_ls.model.loading import ModelLoadError

        assert self.config is not None
        paths = self.config.paths(self.key)
        ensure_private_dir(paths["dir"])
        logf = paths["log"]
        with contextlib.suppress(OSError):
            if logf.stat().st_size > LOG_ROTATE_BYTES:
                logf.replace(logf.with_name(logf.name + ".1"))
        cmd = [sys.executable, "-m", "canvas_ls.server.engine", *self.config.argv()]
        log.info("starting the canvas-ls engine: %s (log: %s)", " ".join(cmd), logf)
        fd = os.open(logf, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, close_fds=True, start_new_session=True)
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
        from canvas_ls.model.loading import ModelLoadError

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
                        raise ModelLoadError(f"the canvas-ls engine exited with status {proc.returncode} before serving: {self._log_tail()}")
                    if spawns >= 3:
                        raise ModelLoadError(f"the canvas-ls engine did not come up after {spawns} starts: {self._log_tail()}")
                    proc = self._spawn()  # a second engine for the same key exits at once (status 0): we retry
                    spawns += 1
                if time.monotonic() > deadline:
                    raise ModelLoadError(f"the canvas-ls engine did not open {self.socket_path} within {self.start_timeout:.0f}s: {self._log_tail()}")
                time.sleep(0.05)
                continue
            except OSError as exc:
                sock.close()
                raise ModelLoadError(f"cannot connect to the canvas-ls engine at {self.socket_path}: {exc}") from exc
            peer = _peer(sock)
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
            self._loaded = _to_loaded(reply)
            log.info("attached to the canvas-ls engine pid %d: %s", reply.pid, reply.model.description)
            return

    def _handshake(self, sock: socket.socket, deadline: float, proc: subprocess.Popen | None) -> HelloReplyMsg:
        from canvas_ls.model.loading import ModelLoadError

        sock.sendall(encode(HelloMsg(PROTOCOL_VERSION, list(self.key), f"canvas-ls {__version__} pid {os.getpid()}")))
        frames = FrameReader()
        while True:
            if time.monotonic() > deadline:
                raise ModelLoadError(f"the canvas-ls engine did not finish loading its model within {self.start_timeout:.0f}s")
            ready, _, _ = select.select([sock], [], [], 0.2)
            if not ready:
                continue
            try:
                data = sock.recv(1 << 16)
            except ConnectionError:
                data = b""
            if not data:  # closed during the handshake: a failed load, or an engine that was stopping
                if proc is not None and proc.poll() is not None and proc.returncode != 0:
                    raise ModelLoadError(f"the canvas-ls engine exited with status {proc.returncode}: {self._log_tail()}")
                raise _RetrySafe()
            for m in frames.feed(data):
                if isinstance(m, HelloReplyMsg):
                    return m
                if isinstance(m, ErrorMsg):
                    raise ModelLoadError(m.message if m.kind in (MODEL_LOAD, MISMATCH) else f"engine handshake failed ({m.kind}): {m.message}")
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
                self.on_event(f"the canvas-ls engine (pid {pid}) exited; starting a new one")

    # ---- filling ----

    def fill(self, request, *, on_step=None, cancelled=None, judge=None):
        """Fill one request through the engine; same contract as model.infill.Infiller.fill."""
        from canvas_ls.model.sampler import FillCancelled

        lang = getattr(judge, "lang", None) if judge is not None else None
        if judge is not None and lang is None and not self._warned_judge:
            self._warned_judge = True
            log.warning("this judge has no .lang, so the engine cannot rebuild it: remote fills run without syntax repair")
        with self._fill_lock:
            for attempt in range(2):
                if cancelled is not None and cancelled():
                    raise FillCancelled()
                self._check_alive()
                self._ensure_connected()
                rid = next(self._ids)
                msg = FillRequestMsg(
                    id=rid, text=request.text, holes=[tuple(h) for h in request.holes], max_tokens=request.max_tokens,
                    length_candidates=list(request.length_candidates), settings=request.settings.to_dict(),
                    cache_key=request.cache_key, lang=lang, steps=on_step is not None,
                )
                try:
                    self._send(msg)
                except OSError:
                    pid = self.pid
                    self._reset()
                    if attempt == 0:  # it never reached a live engine: nothing ran, so resending is safe
                        self.on_event(f"the canvas-ls engine (pid {pid}) is gone; starting a new one")
                        continue
                    raise EngineDied(f"could not send the fill to the canvas-ls engine (pid {pid}); the next fill starts a new one")
                try:
                    return self._wait(rid, on_step, cancelled)
                except _RetrySafe:
                    continue
            raise EngineDied("the canvas-ls engine closed the connection twice before starting the fill")

    def _wait(self, rid: int, on_step, cancelled):
        from canvas_ls.model.sampler import FillCancelled

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
                    self.on_event(message)
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
                            on_step(RemoteStepEvent(m.step, m.max_steps, m.committed, m.slots, tuple(m.texts), m.round_step, m.round_steps, m.repair))
                    elif isinstance(m, ResultMsg):
                        answered = True
                        self.last_result = m
                        return m.to_result()
                    elif isinstance(m, ErrorMsg):
                        answered = True
                        raise self._error(m)
        finally:
            if not answered:  # on_step raised, or the thread was interrupted: stop the engine's work
                self._send_quiet(CancelMsg(rid))

    def _error(self, m: ErrorMsg) -> Exception:
        from canvas_ls.model.canvas import CanvasTooSmall
        from canvas_ls.model.loading import ModelLoadError
        from canvas_ls.model.sampler import FillCancelled

        if m.kind == CANCELLED:
            return FillCancelled()
        if m.kind == CANVAS_TOO_SMALL:
            return CanvasTooSmall(m.message)
        if m.kind == BAD_REQUEST:
            return ValueError(m.message)
        if m.kind == MODEL_LOAD:
            return ModelLoadError(m.message)
        if m.kind == SHUTTING_DOWN:
            self._reset()
            return EngineDied(m.message + "; the fill was lost (nothing was applied) and the next fill starts a new engine")
        return EngineError(f"canvas-ls engine: {m.kind}: {m.message}")


def engine_config_for(settings, **overrides) -> EngineConfig:
    """The engine a language server with these ServerSettings needs (the model key comes from them)."""
    base = dict(
        model=settings.modelPath, device=settings.device, dtype=settings.dtype,
        max_prompt_tokens=settings.maxPromptTokens, canvas_length=settings.canvasLength,
    )
    idle = getattr(settings, "engineIdleMinutes", None)
    if idle is not None:
        base["idle_minutes"] = float(idle)
    base.update(overrides)
    return EngineConfig(**base)


def connect_or_start(settings, *, start_timeout: float = 300.0, **engine_overrides) -> RemoteInfiller:
    """Attach to the running engine for these settings' model key, or start one and wait for it.

    Raises ModelLoadError (with the engine log's tail) when the engine cannot start or load its model.
    engine_overrides: EngineConfig fields (run_dir, idle_minutes, batch_window_ms, max_batch, ...); they
    apply when this call starts the engine.
    """
    from canvas_ls.model.loading import ModelLoadError

    from .engine_protocol import UnsafeRunDir

    try:
        remote = RemoteInfiller(engine_config_for(settings, **engine_overrides), start_timeout=start_timeout)
        remote.connect()
    except (UnsafeRunDir, OSError) as exc:
        raise ModelLoadError(f"shared engine: {exc}") from exc
    return remote
