"""The one interface between the language server and every model backend. Plain Python: no torch.

    filler.fill(FillRequest(text, holes=((start, end),), language="python"), on_step=..., cancelled=...)
        -> FillResult            raw fills, one per hole (post-processing is the server's)
    filler.info()  -> FillerInfo model, device, canvas, backend, and what it can do (repair, ...)
    filler.forget(document)      drop what is cached for a closed document
    filler.close()               done with this backend: drop connections, stop background work

Backends: the in-process `model.infill.Infiller`, the vLLM client (`server.vllm.VllmFiller`) and the shared-engine client
(`server.engine.client.RemoteFiller`). The server imports this module only, until it loads a model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from .settings import SamplerSettings

Decoder = Literal["diffusion", "autoregressive"]


class ModelLoadError(RuntimeError):
    """A model directory is missing, incomplete or unusable; the message names what is wrong."""


class FillCancelled(Exception):
    """The caller cancelled the fill; raised between denoising steps."""


class BadFill(ValueError):
    """The request cannot be filled as asked (holes outside the text, a canvas too small for it)."""


class BackendDied(RuntimeError):
    """The process serving the model died mid-fill; nothing was filled, the next fill may work."""


@dataclass(frozen=True)
class FillRequest:
    text: str
    holes: tuple[tuple[int, int], ...]  # character spans (start, end) to fill; sorted, not overlapping
    max_tokens: int = 64  # slots per hole: the most tokens one fill may take
    length_candidates: tuple[int, ...] = ()  # single hole only: slot counts tried as one batch
    settings: SamplerSettings = field(default_factory=SamplerSettings)
    document: str | None = None  # the document's identity (its URI): its prompt K/V is reused next time
    language: str | None = None  # tree-sitter language of `text`; None: plain text, no syntax repair
    decoder: Decoder = "diffusion"  # "autoregressive": the same weights left to right (the baseline)
    single_line: bool = False  # the fill ends at its first newline (left-to-right decoding stops there)
    # Set: repair instead of fill. Each hole's current text is the starting canvas; only its tokens with a
    # probability below this (every one at >= 1) and those the syntax judge blames change (model/repair.py).
    repair_threshold: float | None = None

    def validate(self) -> None:
        """Raise BadFill with the reason when the request cannot be filled."""
        if not self.holes:
            raise BadFill("a fill request needs at least one hole")
        prev_end = 0
        for start, end in self.holes:
            if not (0 <= start <= end <= len(self.text)):
                raise BadFill(f"hole ({start}, {end}) lies outside the document (length {len(self.text)})")
            if start < prev_end:
                raise BadFill("holes must be sorted and must not overlap")
            prev_end = end
        if not 1 <= self.max_tokens <= 4096:
            raise BadFill(f"max_tokens must be in 1..4096, got {self.max_tokens}")
        if self.length_candidates and len(self.holes) != 1:
            raise BadFill("length candidates apply to a single hole only")
        if self.decoder == "autoregressive" and len(self.holes) != 1:
            raise BadFill("left-to-right decoding fills one hole at a time")


@dataclass(frozen=True)
class FillResult:
    fills: tuple[str, ...]  # one text per hole, raw from the model
    score: float  # mean log-probability of the chosen fill's tokens (higher is better)
    forward_passes: int  # decoder passes of the whole batch this fill ran in
    tokens: int  # tokens in the fills, end tokens excluded
    seconds: float
    canvas_length: int
    slots: tuple[int, ...]  # slots per hole of the winning candidate
    candidates: int
    repairs: int  # syntax repair rounds the winner went through
    syntax_errors: int  # error ranges the judge still reports for the winner (0 without a language)
    prompt_tokens: int
    reused_prompt_tokens: int
    errors_found: int = 0  # syntax errors the judge found while denoising (the ones corrected or repaired)
    steps: int = 0  # denoising steps the fill's rows took (<= forward_passes: a row may stop early)
    sampler: str = ""  # "reference" | "commit" | "autoregressive": what produced the fill ("" unknown)
    changed_tokens: int = 0  # a repair: tokens that differ from the hole's own (tokens: those re-noised)
    # why this path filled a single line ("auto: autoregressive (estimated: canvas 140 ms, left to
    # right 60 ms)"); "" when nothing was chosen (the path was fixed)
    choice: str = ""
    threads: int = 0  # CPU threads the in-process model ran this fill on at its end (0: another backend)

    @property
    def tokens_per_pass(self) -> float:
        return self.tokens / self.forward_passes if self.forward_passes else 0.0


@dataclass(frozen=True)
class StepEvent:
    """One denoising step of one request, made once per step. Counts are over the request's rows."""

    step: int  # forward passes so far (1-based)
    round_step: int  # the step within the current round (what users are shown) ...
    round_steps: int  # ... out of this round's budget
    repair: int  # 0 in the first round; n in the n-th syntax repair round
    committed: int  # committed hole slots
    slots: int  # hole slots
    texts: tuple[str, ...]  # per hole: the canvas as text, still-open slots drawn as OPEN_SLOT

    @property
    def label(self) -> str:
        """ "canvas 4/16", or "canvas 2/8 · repair 1" in a repair round."""
        return f"canvas {self.round_step}/{self.round_steps}" + (f" · repair {self.repair}" if self.repair else "")


OPEN_SLOT = "·"  # how a still-noisy canvas position is drawn in StepEvent.texts


@dataclass(frozen=True)
class FillerInfo:
    model: str  # the checkpoint's directory name
    path: str
    device: str
    dtype: str
    canvas_length: int
    backend: str  # "in-process", "shared engine (pid N)", ...
    noise: str = "uniform"
    random_weights: bool = False  # a tiny test/demo model: its fills are noise
    live_canvas: bool = True  # whether StepEvent.texts carry intermediate canvases
    compile: str = ""  # the decoder step: "compiled", "eager (why)", "off", "pending", "compiling" ("" not in process)
    pass_ms: float | None = None  # a denoising step on a 32-token canvas, as measured at warm-up
    token_ms: float | None = None  # a left-to-right token, as measured at warm-up
    warming_up: bool = False  # warm-up (compile, costs) still running beside fills: they run eager meanwhile
    threads: str = ""  # the in-process model's CPU threads: "auto (2 of 2 cores last)", "1" ("" another backend)
    # What the backend can do; handlers ask these instead of comparing backend names. False unless the
    # backend says so.
    repair: bool = False  # it repairs existing code (FillRequest.repair_threshold: canvas.repairSelection)
    reproducible: bool = False  # the same request and seed give the same fill
    left_to_right: bool = False  # it has the left-to-right draft decoder (FillRequest.decoder "autoregressive")

    def describe(self) -> str:
        kind = " (random weights: output is noise)" if self.random_weights else ""
        return f"{self.model} on {self.device} ({self.dtype}, {self.noise} noise, {self.backend}){kind}"


OnStep = Callable[[StepEvent], None]
Cancelled = Callable[[], bool]


class Filler(Protocol):
    def fill(
        self, request: FillRequest, on_step: OnStep | None = None, cancelled: Cancelled | None = None
    ) -> FillResult:
        """Fill the request's holes. Raises BadFill, FillCancelled, ModelLoadError or BackendDied."""
        ...

    def info(self) -> FillerInfo: ...

    def forget(self, document: str) -> None:
        """Drop what is cached for a document (its prompt K/V) when the editor closes it."""
        ...

    def close(self) -> None:
        """The caller is done with this backend (it loaded another, or is exiting): drop connections and
        stop background work. Idempotent: a second call does nothing."""
        ...


# judge(fills) -> per fill, the character ranges (within that fill) that add syntax errors.
Judge = Callable[[tuple[str, ...]], list[list[tuple[int, int]]]]
# make_judge(text, holes, language) -> the judge of fills for those holes. Backends get one from the
# server (the syntax rules are the server's), so a request only names its language.
JudgeFactory = Callable[[str, tuple[tuple[int, int], ...], str], Judge]
