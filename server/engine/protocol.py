"""The shared engine's wire protocol: msgspec messages, length-prefixed msgpack frames, and where the
engine of a model lives on disk. Plain Python (msgspec, no torch): the client side imports it.

One engine process serves one *model key* (checkpoint, device, dtype, prompt window, canvas length, and
the canvas-ls install and protocol version). Its files live in a private run directory:

    $XDG_RUNTIME_DIR/canvas-ls/        (mode 0700; when XDG_RUNTIME_DIR is set and ours)
    ~/.cache/canvas-ls/run/            (mode 0700; otherwise)
    $CANVAS_LS_RUN_DIR                 (overrides both; tests and benchmarks)

      engine-<hash>.sock   the Unix socket (mode 0600)
      engine-<hash>.lock   flock'ed by the live engine for its whole life; holds its pid
      engine-<hash>.log    the engine's stderr log

where <hash> is derived from the model key, so language servers configured for the same model find the
same engine, and a language server configured for another model starts (or finds) another engine. The
engine checks the full key again in the handshake.

A conversation (client -> engine, engine -> client):

    Hello(protocol, key, client)      -> HelloReply(protocol, pid, key, info) | Error(0, kind, message)
    Fill(id, request, steps)          -> Step(id, event)* then exactly one of Result(id, ...) | Error(id, ...)
    Cancel(id)                        -> the request ends with Error(id, "cancelled") (at once)
    Forget(document)                  (no answer: drop that document's cached prompt K/V)
                                      <- Bye(reason) before the engine closes a connection on purpose

The payloads are the interface's own dataclasses (model/interface.py: FillRequest, StepEvent,
FillResult, FillerInfo), so nothing is declared twice. Frames: a 4-byte big-endian payload length,
then one msgpack-encoded message (a tagged union: the "type" field names the message).
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import struct
from pathlib import Path
from typing import NamedTuple, Union

import msgspec

from canvas_ls.model import default_model_path
from canvas_ls.model.interface import FillerInfo, FillRequest, FillResult, StepEvent

from .. import __version__

PROTOCOL_VERSION = 2
MAX_FRAME = 256 * 1024 * 1024  # documents are capped at maxDocumentBytes (8 MB by default); this is a sanity bound
_HEADER = struct.Struct(">I")


# ---- messages ---------------------------------------------------------------------------------


class Msg(msgspec.Struct, tag_field="type", omit_defaults=True):
    """Base of every message; the subclass tag goes into the "type" field."""


class HelloMsg(Msg, tag="hello"):
    protocol: int
    key: list[str]  # the model key the client wants (see model_key)
    client: str = ""  # free text for logs: "canvas-ls 0.1.0 pid 1234"


class HelloReplyMsg(Msg, tag="hello_reply"):
    protocol: int
    pid: int
    key: list[str]
    info: FillerInfo  # the engine's Infiller.info(); the client names itself the backend
    version: str = ""  # canvas-ls version of the engine


class FillMsg(Msg, tag="fill"):
    id: int  # per connection, > 0 (0 names the connection in errors)
    request: FillRequest  # the engine builds the syntax judge from request.language
    steps: bool = False  # stream StepMsg for this request


class CancelMsg(Msg, tag="cancel"):
    id: int


class ForgetMsg(Msg, tag="forget"):
    document: str


class StepMsg(Msg, tag="step"):
    id: int
    event: StepEvent  # the request's own view of the step (its rows, its first row's canvas)


class ResultMsg(Msg, tag="result"):
    id: int
    result: FillResult
    # engine-side extras, for diagnostics and benchmarks
    batch_requests: int = 1  # requests that shared this fill's forward passes (1: ran alone)
    queued_seconds: float = 0.0  # time between arrival and the start of its batch


# ErrorMsg kinds. id 0 is a connection-level error (handshake, protocol).
CANCELLED = "cancelled"  # the client cancelled the request: FillCancelled on the client
BAD_REQUEST = "bad_request"  # the request cannot be filled as asked: BadFill on the client
CANVAS_TOO_SMALL = "canvas_too_small"  # model.plan.CanvasTooSmall (a BadFill) on the client
MODEL_LOAD = "model_load"  # the engine could not load its model: ModelLoadError on the client
MISMATCH = "mismatch"  # handshake: protocol or model key differ
PROTOCOL = "protocol"  # a malformed or unexpected message
SHUTTING_DOWN = "shutting_down"  # the engine was stopped while the request was queued or running
INTERNAL = "internal"  # anything else raised while filling


class ErrorMsg(Msg, tag="error"):
    id: int
    kind: str
    message: str


class ByeMsg(Msg, tag="bye"):
    # "idle": the engine exits after its idle time; it started nothing from this connection that is not
    # finished, so a request sent meanwhile can be retried safely on a fresh engine. "stopped": SIGTERM.
    reason: str


MESSAGE_TYPES = (HelloMsg, HelloReplyMsg, FillMsg, CancelMsg, ForgetMsg, StepMsg, ResultMsg, ErrorMsg, ByeMsg)
Message = Union[MESSAGE_TYPES]  # type: ignore[valid-type]


class ProtocolError(Exception):
    """A frame that is too large or does not decode to a known message."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def encode(msg: Msg) -> bytes:
    """One frame: length prefix + msgpack payload."""
    payload = _encoder.encode(msg)
    if len(payload) > MAX_FRAME:
        raise ProtocolError(f"message of {len(payload)} bytes exceeds the {MAX_FRAME}-byte frame limit")
    return _HEADER.pack(len(payload)) + payload


def decode_payload(payload: bytes | memoryview) -> Msg:
    try:
        return _decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError(f"undecodable message: {exc}") from exc


class FrameReader:
    """Incremental decoder for a byte stream: feed() bytes, get whole messages back."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Msg]:
        self._buf += data
        out = []
        while len(self._buf) >= 4:
            (n,) = _HEADER.unpack_from(self._buf)
            if n > MAX_FRAME:
                raise ProtocolError(f"frame of {n} bytes exceeds the {MAX_FRAME}-byte limit")
            if len(self._buf) < 4 + n:
                break
            payload = bytes(self._buf[4 : 4 + n])
            del self._buf[: 4 + n]
            out.append(decode_payload(payload))
        return out


async def read_message(reader) -> Msg:
    """Next message from an asyncio StreamReader; raises asyncio.IncompleteReadError at EOF."""
    header = await reader.readexactly(4)
    (n,) = _HEADER.unpack(header)
    if n > MAX_FRAME:
        raise ProtocolError(f"frame of {n} bytes exceeds the {MAX_FRAME}-byte limit")
    return decode_payload(await reader.readexactly(n))


def peer_credentials(sock: socket.socket | None) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of a Unix socket's peer, where the platform tells (Linux)."""
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return struct.unpack("3i", raw)


# ---- where engines live ------------------------------------------------------------------------


class UnsafeRunDir(RuntimeError):
    """The run directory is not private to this user (wrong owner or not a directory)."""


def _owned_dir(path: str | None) -> bool:
    if not path:
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()


def default_run_dir() -> Path:
    override = os.environ.get("CANVAS_LS_RUN_DIR")
    if override:
        return Path(override)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if _owned_dir(runtime):
        return Path(runtime) / "canvas-ls"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "canvas-ls" / "run"


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (mode 0700) or check an existing one: ours, a directory, no access for others."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeRunDir(f"{path} is not a directory (a symlink?); remove it or set CANVAS_LS_RUN_DIR")
    if st.st_uid != os.getuid():
        raise UnsafeRunDir(
            f"{path} belongs to uid {st.st_uid}, not to this user; set CANVAS_LS_RUN_DIR to a private directory"
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def model_key(model: str, device: str, dtype: str, max_prompt_tokens: int, canvas_length: int) -> list[str]:
    """The identity of an engine: everything that changes what a fill computes or which code computes it.

    `model` is the modelPath setting ("" = the default model), named as resolve_model_dir names it.
    "cuda" means "cuda:0" and CPU "auto" dtype means float32, so either spelling shares one engine.
    An "auto" device stays "auto": resolving it needs torch, which clients never import (the engine
    resolves it when it loads), so "auto" and the device it picks start separate engines.
    """
    device = normalize_device(device)
    return [
        f"protocol={PROTOCOL_VERSION}",
        f"canvas-ls={__version__}",
        f"install={Path(__file__).resolve().parent}",
        f"model={resolve_model_dir(model)}",
        f"device={device}",
        f"dtype={normalize_dtype(dtype, device)}",
        f"maxPromptTokens={int(max_prompt_tokens)}",
        f"canvasLength={int(canvas_length)}",
    ]


DEMO_MODEL = "<demo>"  # the key's name for the tiny random-weight demo model (server.model_host.demo_model_dir())


def resolve_model_dir(model: str) -> str:
    """The checkpoint the modelPath setting `model` names: its real path; for "" the bundled model's,
    or DEMO_MODEL when this install bundles none (its directory is server.model_host.demo_model_dir(),
    which the engine resolves; model_host imports the engine client, so this module must not import it)."""
    if model:
        return os.path.realpath(os.path.expanduser(model))
    bundled = default_model_path()
    return str(bundled.resolve()) if bundled is not None else DEMO_MODEL


def normalize_device(device: str) -> str:
    d = (device or "auto").strip().lower()
    return "cuda:0" if d == "cuda" else d


def normalize_dtype(dtype: str, device: str) -> str:
    d = (dtype or "auto").strip().lower()
    if d == "auto" and device == "cpu":
        return "float32"
    return d


def key_hash(key: list[str]) -> str:
    return hashlib.sha256("\0".join(key).encode()).hexdigest()[:16]


class EnginePaths(NamedTuple):
    dir: Path
    socket: Path
    lock: Path
    log: Path

    @classmethod
    def beside(cls, socket_path: Path) -> EnginePaths:
        """The files of an engine on an explicit socket path: lock and log next to it."""
        return cls(
            socket_path.parent,
            socket_path,
            socket_path.with_name(socket_path.name + ".lock"),
            socket_path.with_name(socket_path.name + ".log"),
        )


def engine_paths(key: list[str], run_dir: Path) -> EnginePaths:
    """The socket, lock and log of the engine for this key, in `run_dir`."""
    h = key_hash(key)
    paths = EnginePaths(
        run_dir, run_dir / f"engine-{h}.sock", run_dir / f"engine-{h}.lock", run_dir / f"engine-{h}.log"
    )
    if len(os.fsencode(paths.socket)) > 107:
        raise UnsafeRunDir(
            f"socket path {paths.socket} is too long for a Unix socket; set CANVAS_LS_RUN_DIR to a shorter directory"
        )
    return paths
