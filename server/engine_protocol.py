"""The shared engine's wire protocol: msgspec messages, length-prefixed msgpack frames, and where the
engine of a model lives on disk.

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

    Hello(protocol, key, client)            -> HelloReply(protocol, pid, key, model) | Error(0, kind, message)
    FillRequest(id, ...)                    -> Step(id, ...)* then exactly one of Result(id, ...) | Error(id, ...)
    Cancel(id)                              -> the request ends with Error(id, "cancelled") (at once)
    Forget(cache_key)                       (no answer: drop that document's cached prompt K/V)
                                            <- Bye(reason) before the engine closes a connection on purpose

Frames: a 4-byte big-endian payload length, then one msgpack-encoded message (a tagged union: the
"type" field names the message).
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from pathlib import Path
from typing import Any, Union

import msgspec

PROTOCOL_VERSION = 1
MAX_FRAME = 256 * 1024 * 1024  # documents are capped at maxDocumentBytes (8 MB by default); this is a sanity bound
_HEADER = struct.Struct(">I")


# ---- messages ---------------------------------------------------------------------------------


class Msg(msgspec.Struct, tag_field="type", omit_defaults=True):
    """Base of every message; the subclass tag goes into the "type" field."""


class HelloMsg(Msg, tag="hello"):
    protocol: int
    key: list[str]  # the model key the client wants (see model_key)
    client: str = ""  # free text for logs: "canvas-ls 0.1.0 pid 1234"


class ModelInfo(msgspec.Struct, omit_defaults=True):
    path: str
    device: str  # "cpu", "cuda:0"
    dtype: str  # "float32", "bfloat16", ...
    noise: str
    canvas_length: int
    vocab_size: int
    random_weights: bool
    description: str  # LoadedModel.describe()


class HelloReplyMsg(Msg, tag="hello_reply"):
    protocol: int
    pid: int
    key: list[str]
    model: ModelInfo
    version: str = ""  # canvas-ls version of the engine


class FillRequestMsg(Msg, tag="fill"):
    id: int
    text: str
    holes: list[tuple[int, int]]
    max_tokens: int = 64
    length_candidates: list[int] = []
    settings: dict[str, Any] = {}  # SamplerSettings.to_dict()
    cache_key: str | None = None
    # The syntax judge is rebuilt in the engine with server.pipeline.make_judge(text, holes, lang): a
    # Python closure cannot cross processes. None: no judge (no syntax repair).
    lang: str | None = None
    steps: bool = False  # stream StepMsg for this request


class CancelMsg(Msg, tag="cancel"):
    id: int


class ForgetMsg(Msg, tag="forget"):
    cache_key: str


class StepMsg(Msg, tag="step"):
    id: int
    step: int  # forward passes so far
    max_steps: int
    committed: int  # committed hole slots of this request (all its candidate rows)
    slots: int  # hole slots of this request
    texts: list[str]  # per hole: the canvas as text, open slots drawn as "·" (model.infill.OPEN_SLOT)
    round_step: int = 0  # model.sampler.StepEvent's user-facing labels
    round_steps: int = 0
    repair: int = 0


class ResultMsg(Msg, tag="result"):
    id: int
    # model.infill.FillResult, field by field
    fills: list[str]
    score: float
    forward_passes: int
    tokens: int
    seconds: float
    canvas_length: int
    slots: list[int]
    candidates: int
    repairs: int
    syntax_errors: int
    prompt_tokens: int
    reused_prompt_tokens: int
    # engine-side extras, for diagnostics and benchmarks
    batch_requests: int = 1  # requests that shared this fill's forward passes (1: ran alone)
    queued_seconds: float = 0.0  # time between arrival and the start of its batch

    @classmethod
    def from_result(cls, id: int, r, *, batch_requests: int = 1, queued_seconds: float = 0.0) -> "ResultMsg":
        return cls(
            id=id, fills=list(r.fills), score=float(r.score), forward_passes=r.forward_passes, tokens=r.tokens,
            seconds=float(r.seconds), canvas_length=r.canvas_length, slots=list(r.slots), candidates=r.candidates,
            repairs=r.repairs, syntax_errors=r.syntax_errors, prompt_tokens=r.prompt_tokens,
            reused_prompt_tokens=r.reused_prompt_tokens, batch_requests=batch_requests, queued_seconds=queued_seconds,
        )

    def to_result(self):
        from canvas_ls.model.infill import FillResult

        return FillResult(
            fills=tuple(self.fills), score=self.score, forward_passes=self.forward_passes, tokens=self.tokens,
            seconds=self.seconds, canvas_length=self.canvas_length, slots=tuple(self.slots), candidates=self.candidates,
            repairs=self.repairs, syntax_errors=self.syntax_errors, prompt_tokens=self.prompt_tokens,
            reused_prompt_tokens=self.reused_prompt_tokens,
        )


# ErrorMsg kinds. id 0 is a connection-level error (handshake).
CANCELLED = "cancelled"  # the client cancelled the request
BAD_REQUEST = "bad_request"  # the request is invalid (message says why); ValueError on the client
CANVAS_TOO_SMALL = "canvas_too_small"  # model.canvas.CanvasTooSmall on the client
MODEL_LOAD = "model_load"  # the engine could not load its model; ModelLoadError on the client
MISMATCH = "mismatch"  # handshake: protocol or model key differ
PROTOCOL = "protocol"  # a malformed or unexpected message
SHUTTING_DOWN = "shutting_down"  # the engine was stopped while the request was queued or running
INTERNAL = "internal"  # anything else raised while filling
ERROR_KINDS = (CANCELLED, BAD_REQUEST, CANVAS_TOO_SMALL, MODEL_LOAD, MISMATCH, PROTOCOL, SHUTTING_DOWN, INTERNAL)


class ErrorMsg(Msg, tag="error"):
    id: int
    kind: str
    message: str


class ByeMsg(Msg, tag="bye"):
    # "idle": the engine exits after its idle time; it started nothing from this connection that is not
    # finished, so a request sent meanwhile can be retried safely on a fresh engine. "stopped": SIGTERM.
    reason: str


Message = Union[
    HelloMsg, HelloReplyMsg, FillRequestMsg, CancelMsg, ForgetMsg, StepMsg, ResultMsg, ErrorMsg, ByeMsg
]
MESSAGE_TYPES = (HelloMsg, HelloReplyMsg, FillRequestMsg, CancelMsg, ForgetMsg, StepMsg, ResultMsg, ErrorMsg, ByeMsg)


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

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)


async def read_message(reader) -> Msg:
    """Next message from an asyncio StreamReader; raises asyncio.IncompleteReadError at EOF."""
    header = await reader.readexactly(4)
    (n,) = _HEADER.unpack(header)
    if n > MAX_FRAME:
        raise ProtocolError(f"frame of {n} bytes exceeds the {MAX_FRAME}-byte limit")
    return decode_payload(await reader.readexactly(n))


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
        raise UnsafeRunDir(f"{path} belongs to uid {st.st_uid}, not to this user; set CANVAS_LS_RUN_DIR to a private directory")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def model_key(model: str, device: str, dtype: str, max_prompt_tokens: int, canvas_length: int) -> list[str]:
    """The identity of an engine: everything that changes what a fill computes or which code computes it.

    `model` is the modelPath setting ("" = the default model); it is resolved to the directory that
    would be loaded (without building the demo model). "auto" device and CPU "auto" dtype are resolved
    so "auto" and what it means share one engine; CUDA "auto" dtype is left to the engine.
    """
    from . import __version__

    return [
        f"protocol={PROTOCOL_VERSION}",
        f"canvas-ls={__version__}",
        f"install={Path(__file__).resolve().parent}",
        f"model={resolve_model_dir(model)}",
        f"device={normalize_device(device)}",
        f"dtype={normalize_dtype(dtype, normalize_device(device))}",
        f"maxPromptTokens={int(max_prompt_tokens)}",
        f"canvasLength={int(canvas_length)}",
    ]


def resolve_model_dir(model: str) -> str:
    if model:
        return os.path.realpath(os.path.expanduser(model))
    from canvas_ls.model.loading import default_model_path

    from .model_host import cache_dir

    return str(default_model_path() or (cache_dir() / "tiny-model"))


def normalize_device(device: str) -> str:
    d = (device or "auto").strip().lower()
    if d == "auto":
        import torch

        d = "cuda" if torch.cuda.is_available() else "cpu"
    if d == "cuda":
        d = "cuda:0"
    return d


def normalize_dtype(dtype: str, device: str) -> str:
    d = (dtype or "auto").strip().lower()
    if d == "auto" and device == "cpu":
        return "float32"
    return d


def key_hash(key: list[str]) -> str:
    return hashlib.sha256("\0".join(key).encode()).hexdigest()[:16]


def engine_paths(key: list[str], run_dir: Path | None = None) -> dict[str, Path]:
    """{"dir", "socket", "lock", "log"} for the engine of this key."""
    d = Path(run_dir) if run_dir is not None else default_run_dir()
    h = key_hash(key)
    paths = {"dir": d, "socket": d / f"engine-{h}.sock", "lock": d / f"engine-{h}.lock", "log": d / f"engine-{h}.log"}
    if len(os.fsencode(paths["socket"])) > 107:
        raise UnsafeRunDir(f"socket path {paths['socket']} is too long for a Unix socket; set CANVAS_LS_RUN_DIR to a shorter directory")
    return paths
