"""Server settings: one table of fields, each with its default and documentation.

They come from `initializationOptions` and `workspace/didChangeConfiguration` (either flat or under a
"canvas" key) under the camelCase names below. Invalid values are reported and replaced by their
defaults; the valid ones still apply. `settings_table()` generates the README's configuration table
and the editor clients mirror these names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from canvas_ls.model.settings import SamplerSettings

from .syntax.postprocess import PIPELINE

FILTERS = tuple(dict.fromkeys(f.__name__ for f in PIPELINE))


def _setting(
    default: Any, doc: str, *, choices: tuple = (), lo: float | None = None, hi: float | None = None, pattern: str = ""
):
    return field(default=default, metadata={"doc": doc, "choices": choices, "lo": lo, "hi": hi, "pattern": pattern})


@dataclass(frozen=True)
class ServerSettings:
    modelPath: str = _setting(
        "",
        "Checkpoint directory (transformers format). Empty: the bundled model, or a tiny random-weight demo model when none is bundled.",
    )
    device: str = _setting(
        "auto", "auto (CUDA if available, else CPU), cpu, cuda, cuda:N or mps.", pattern=r"auto|cpu|cuda(:\d+)?|mps"
    )
    dtype: str = _setting(
        "auto",
        "auto (bfloat16 on CUDA, and on a CPU with native bfloat16 (AVX512-BF16, AMX) for models of hidden size 256 or more, where it is about 2x faster; else float32), float32, bfloat16 or float16.",
        choices=("auto", "float32", "bfloat16", "float16"),
    )
    compile: str = _setting(
        "auto",
        "Compile the decoder step with torch.compile (CPU), once after the model loads, in the background (fills meanwhile run eager): auto (when an eager pass takes 10 ms or more, as with the bundled model's size; timed once per model and machine, see singleLineDecoder), on or off. Needs a C++ compiler; kernels are cached in ~/.cache/canvas-ls/inductor. Without a compiler, or if compiling fails, fills run eager (one log line).",
        choices=("auto", "on", "off"),
    )
    warmUp: str = _setting(
        "background",
        "When an in-process model warms up after loading (compiling its decoder step, timing a pass and a left-to-right token): background (on a thread of its own, in the pauses between fills: each stage waits for a second without fills, for at most 10 s after loading, then runs between fills, so the warm-up ends even under requests sent back to back; fills meanwhile run eager, on the canvas, so the first completion never waits for a compile) or first (before the first fill: every fill of the server then runs the same step, as evaluations want).",
        choices=("background", "first"),
    )
    canvasLength: int = _setting(
        256, "Largest canvas in tokens (capped by the model's own canvas length).", lo=32, hi=4096
    )
    decoder: str = _setting(
        "diffusion",
        "diffusion (the canvas) or autoregressive (the same weights left to right, one token per pass: the baseline for comparisons).",
        choices=("diffusion", "autoregressive"),
    )
    singleLineDecoder: str = _setting(
        "auto",
        "How a single-line completion is filled: auto (the checkpoint's measured choice where its canvas_ls.json states one: the bundled model's is left to right with code before the cursor on its line and none after it, the draft never seeing the suffix; otherwise on the canvas, or by the same weights left to right when that is expected to save 50 ms and a quarter of the time: from the cost of a pass and of a left-to-right token, and the passes and tokens of a calibration line, measured once per model and machine by the first server's warm-up and kept in ~/.cache/canvas-ls/measured, so every server of one installation on one machine chooses alike, whatever the load while it warmed up), diffusion or autoregressive.",
        choices=("auto", "diffusion", "autoregressive"),
    )
    sampler: str = _setting(
        "auto",
        "The denoising loop: reference (transformers' DiffusionGemma generate(): every step re-decides which tokens to keep, so earlier ones can be revised; the output is the most likely canvas; stops early once stable and confident; syntax errors re-noised while denoising), commit (a token once accepted stays; syntax repair rounds after a fill finishes) or auto (the checkpoint's default: reference for DiffusionGemma checkpoints).",
        choices=("auto", "reference", "commit"),
    )
    maxSteps: int = _setting(16, "Most denoising steps (forward passes) per fill.", lo=1, hi=1024)
    singleLineSteps: int = _setting(
        8,
        "Most denoising steps for a single-line completion (at most maxSteps): a line of a dozen tokens needs fewer than a block.",
        lo=1,
        hi=1024,
    )
    acceptance: str = _setting(
        "entropy",
        "Which positions a step commits: entropy (entropy-bound, as transformers) or confidence (top probability >= confidenceThreshold).",
        choices=("entropy", "confidence"),
    )
    entropyBound: float = _setting(
        0.5,
        "Entropy-bound acceptance: the bound on (sum of entropies - the largest). 0.5 was chosen with the bundled model on the development set (benchmarks/dev_tasks.py); transformers' DiffusionGemma publishes 0.1.",
        lo=1e-6,
        hi=1e6,
    )
    confidenceThreshold: float = _setting(
        0.9, "Confidence acceptance: the top probability a position needs.", lo=1e-6, hi=1.0
    )
    temperatureStart: float = _setting(0.8, "Sampling temperature at the first step (falls linearly).", lo=0.0, hi=10.0)
    temperatureEnd: float = _setting(0.4, "Sampling temperature at the last step.", lo=0.0, hi=10.0)
    repairRounds: int = _setting(
        0,
        "Times a fill that adds syntax errors is re-noised from the first error and denoised again (sampler reference: while denoising). 0 by default: with the bundled model, re-noising while denoising made fills worse on the development set (benchmarks/dev_tasks.py), and stepCandidates chooses by syntax errors instead.",
        lo=0,
        hi=8,
    )
    repairThreshold: float = _setting(
        0.05,
        "canvas.repairSelection: a selected token the model gives a probability below this is re-noised and denoised again (as are tokens the syntax judge blames), the rest held. 0: only the blamed ones; 1: every token.",
        lo=0.0,
        hi=1.0,
    )
    stepCandidates: int = _setting(
        16,
        "Sampler reference: the fills the last steps before the final one showed (their most likely tokens) compete with the final fill: the one with the fewest syntax errors, then the highest mean token probability, is shown. No extra forward passes. 0: the final step's fill, as transformers' generate() returns it. 16 was chosen with the bundled model on the development set (benchmarks/dev_tasks.py).",
        lo=0,
        hi=1024,
    )
    tokenHealing: bool = _setting(
        True,
        "Left-to-right drafts (in process): the prompt's last token is taken back and the first new token must start with its text, as in the text the model learned to continue (without it the bundled model continued '    return ' with a comment). The canvas needs none: it was trained on text cut at any character.",
    )
    seed: int = _setting(0, "Random seed; the same seed and document give the same fill.", lo=0, hi=2**31 - 1)
    disabledFilters: tuple = _setting(
        (),
        "Post-processing filters to skip (server/syntax/postprocess.py), so a benchmark can measure what each one earns: "
        + ", ".join(FILTERS)
        + ".",
        choices=FILTERS,
    )
    singleLineSlots: tuple = _setting(
        (24,), "Canvas slot counts tried (as one batch) for a single-line completion; the model ends the span itself."
    )
    multiLineSlots: tuple = _setting((64,), "Slot counts tried for multi-line completions and selections.")
    lineSlots: tuple = _setting(
        (24,),
        "Slot counts tried for a completion at the start of a line with code after it (whole lines inserted above that line; usually one): 24 with the suffix tokens fits a 32-token canvas.",
    )
    lineSteps: int = _setting(
        32,
        "Most denoising steps for that completion (instead of maxSteps): on its narrow canvas a step costs about a third of a multi-line one, and more steps write better lines.",
        lo=1,
        hi=1024,
    )
    bodySlots: int = _setting(128, "Slots for a regenerated function body.", lo=1, hi=4096)
    lineMinTokens: int = _setting(
        0,
        "Reference sampler: the fewest tokens a completion at the start of a line writes before it may end (the end tokens are barred from the hole's first slots, so an easy <eos> cannot squeeze the lines out); 0: the model may end it at once.",
        lo=0,
        hi=4096,
    )
    multiLineMinTokens: int = _setting(
        0,
        "The same for multi-line completions (a blank line in a function body or below a block opener).",
        lo=0,
        hi=4096,
    )
    endDelay: float = _setting(
        0.0,
        "Reference sampler, multi-line modes (line start, multi-line, function body): the share of the denoising steps (0-0.9) that draw no end token in the hole, so its content is drafted before the model decides where it ends. 0 (off) by default: on the development sets (80 holes each, the bundled model) 0.5 took three-line holes' character similarity 0.185 -> 0.210 but line-start holes' 0.353 -> 0.312 (empty fills 12.5% -> 18.8%).",
        lo=0.0,
        hi=0.9,
    )
    bodyMinTokens: int = _setting(
        0,
        "The same for a regenerated function body.",
        lo=0,
        hi=4096,
    )
    suffixTokens: int = _setting(
        8,
        "Tokens of the text after the hole held on the canvas at least (the canvas's spare room holds more): 8 lets a 24-slot single-line fill fit a 32-token canvas.",
        lo=0,
        hi=4096,
    )
    maxPromptTokens: int = _setting(1024, "Tokens of text before the hole given to the encoder.", lo=16, hi=131072)
    maxDocumentBytes: int = _setting(
        8_000_000, "Documents larger than this are refused with a message.", lo=1, hi=2**31 - 1
    )
    cacheBytes: int = _setting(
        128_000_000,
        "Bytes that the caches of document text and what is derived from it hold together, at most: each document's prompt K/V (reused after a keystroke), parse trees (of open documents up to 256 KB, of windows around the cursor in bigger ones) and the syntax checks' results. The least recently used go first; a closed document's go at once (canvas.status shows `caches`). 128 MB holds the bundled model's prompt K/V of about a dozen documents. 0: nothing is kept (each fill encodes its prompt afresh).",
        lo=0,
        hi=2**40,
    )
    backend: str = _setting(
        "inprocess",
        "Where the model runs: inprocess (inside this language server), shared (one engine process per model serves every editor window; started on demand, see `canvas-ls engine`) or vllm (a vLLM >= 0.32 server at vllmUrl). The old name `engine` is accepted.",
        choices=("inprocess", "shared", "vllm"),
    )
    vllmUrl: str = _setting(
        "http://127.0.0.1:8000",
        "backend vllm: the server's base URL (its /v1/completions serves the DiffusionGemma model).",
    )
    vllmApiKeyEnv: str = _setting(
        "CANVAS_VLLM_API_KEY",
        "backend vllm: the name of the environment variable that holds the API key (the key itself is never a setting, never logged).",
    )
    vllmTimeout: float = _setting(
        30.0, "backend vllm: seconds a request may take before the fill fails with a timeout.", lo=0.1, hi=3600.0
    )
    tokenizerPath: str = _setting(
        "",
        "backend vllm: a directory with the checkpoint's tokenizer.json, to tokenize locally; empty: the server's /tokenize and /detokenize.",
    )
    engineIdleMinutes: float = _setting(
        30.0,
        "Shared engine: minutes without requests after which an engine this server started exits (0: never).",
        lo=0.0,
        hi=10080.0,
    )
    liveCanvas: bool = _setting(
        False, "Send canvas/step notifications with the intermediate canvas of each step (for editors that draw it)."
    )
    logFile: str = _setting("", "Also write the log to this file (the log never goes to stdout).")
    threads: int = _setting(
        0,
        "CPU threads for the in-process model. 0: auto, per fill: every core while other processes leave them free, one fewer for each core they keep busy (two threads beside a busy process made fills 10-30x slower on a 2-core machine); a fill that meets a new load mid-way finishes on fewer. N: always N.",
        lo=0,
        hi=1024,
    )
    logLevel: str = _setting(
        "warning",
        "Log level on stderr and in logFile: debug, info, warning or error (editors such as Neovim file every stderr line as an error).",
        choices=("debug", "info", "warning", "error"),
    )

    def sampler_settings(self, mode: str | None = None) -> SamplerSettings:
        """The sampler settings of a fill ("auto" is resolved against the checkpoint by the backend); a
        completion at a line's start (`mode` "line") takes lineSteps; each multi-line mode its own
        fewest tokens (lineMinTokens, multiLineMinTokens, bodyMinTokens)."""
        return SamplerSettings(
            sampler=self.sampler,  # type: ignore[arg-type]
            max_steps=self.lineSteps if mode == "line" else self.maxSteps,
            acceptance=self.acceptance,  # type: ignore[arg-type]
            entropy_bound=float(self.entropyBound),
            confidence_threshold=float(self.confidenceThreshold),
            temperature_start=float(self.temperatureStart),
            temperature_end=float(self.temperatureEnd),
            repair_rounds=self.repairRounds,
            step_candidates=self.stepCandidates,
            seed=self.seed,
            single_line_steps=self.singleLineSteps,
            single_line_decoder=self.singleLineDecoder,  # type: ignore[arg-type]
            suffix_tokens=self.suffixTokens,
            token_healing=self.tokenHealing,
            min_fill_tokens={
                "line": self.lineMinTokens,
                "multi": self.multiLineMinTokens,
                "body": self.bodyMinTokens,
            }.get(mode or "", 0),
            end_delay=float(self.endDelay) if mode in ("line", "multi", "body") else 0.0,
        )

    def model_key(self) -> tuple:
        """Changing any of these means loading the model (or connecting to its server) again."""
        if self.backend == "vllm":
            return (
                self.backend,
                self.vllmUrl,
                self.vllmApiKeyEnv,
                self.vllmTimeout,
                self.tokenizerPath,
                self.maxPromptTokens,
            )
        return (
            self.backend,
            self.modelPath,
            self.device,
            self.dtype,
            self.compile,
            self.warmUp,
            self.threads,
            self.maxPromptTokens,
            self.canvasLength,
        )


def _check(f, value: Any) -> str | None:
    """Why `value` is not valid for field f, or None."""
    default = f.default
    meta = f.metadata
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "expected true or false"
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            return "expected an integer"
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "expected a number"
    elif isinstance(default, str):
        if not isinstance(value, str):
            return "expected a string"
    elif isinstance(default, tuple) and meta["choices"]:  # a list of names
        if not isinstance(value, (list, tuple)) or not all(v in meta["choices"] for v in value):
            return "expected a list of: " + ", ".join(meta["choices"])
        return None
    elif isinstance(default, tuple):
        if (
            not isinstance(value, (list, tuple))
            or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in value)
        ):
            return "expected a non-empty list of integers in 1..4096"
    if meta["pattern"] and not re.fullmatch(meta["pattern"], value):
        return "expected " + f.metadata["doc"].split(".")[0]
    if meta["choices"] and value not in meta["choices"]:
        return "expected one of " + ", ".join(meta["choices"])
    if meta["lo"] is not None and value < meta["lo"]:
        return f"must be >= {meta['lo']}"
    if meta["hi"] is not None and value > meta["hi"]:
        return f"must be <= {meta['hi']}"
    return None


def parse_settings(raw: Any, base: ServerSettings | None = None) -> tuple[ServerSettings, list[str]]:
    """Settings from a client's JSON object. Returns (settings, problems); never raises.

    An invalid value is left at its default (or at `base`'s value for cross-field sampler
    problems); each problem names the setting and why, and callers say what they do about it."""
    base = base or ServerSettings()
    if raw is None:
        return base, []
    if not isinstance(raw, dict):
        return base, [f"settings must be a JSON object, got {type(raw).__name__}"]
    if isinstance(raw.get("canvas"), dict):
        raw = raw["canvas"]
    if "engine" in raw and "backend" not in raw:  # the setting's old name
        raw = {("backend" if k == "engine" else k): v for k, v in raw.items()}
    known = {f.name: f for f in fields(ServerSettings)}
    changes: dict[str, Any] = {}
    problems = []
    for key, value in raw.items():
        f = known.get(key)
        if f is None:
            problems.append(f"unknown setting {key!r}")
            continue
        why = _check(f, value)
        if why:
            problems.append(f"{key}={value!r}: {why}")
            changes[key] = f.default
        else:
            changes[key] = (
                float(value)
                if isinstance(f.default, float)
                else tuple(value)
                if isinstance(f.default, tuple)
                else value
            )
    settings = replace(base, **changes)
    try:
        settings.sampler_settings()
    except ValueError as exc:  # cross-field problems such as the sampler's own checks
        problems.append(f"sampler settings: {exc}")
        sampler_fields = (
            "maxSteps",
            "acceptance",
            "entropyBound",
            "confidenceThreshold",
            "temperatureStart",
            "temperatureEnd",
            "repairRounds",
            "stepCandidates",
            "seed",
        )
        settings = replace(settings, **{k: getattr(ServerSettings(), k) for k in sampler_fields})
    return settings, problems


def settings_table() -> str:
    """Markdown table of every setting (README, editor docs)."""
    rows = ["| setting | default | meaning |", "| --- | --- | --- |"]
    for f in fields(ServerSettings):
        default = f.default if not isinstance(f.default, str) else f'"{f.default}"'
        if isinstance(f.default, bool):
            default = str(f.default).lower()
        elif isinstance(f.default, tuple):
            default = list(f.default)
        rows.append(f"| `{f.name}` | `{default}` | {f.metadata['doc']} |")
    return "\n".join(rows)


def settings_schema() -> dict[str, dict[str, Any]]:
    """JSON-schema-like description of every setting, for editor clients (VS Code contributes.configuration)."""
    out = {}
    for f in fields(ServerSettings):
        d = f.default
        kind = (
            "boolean"
            if isinstance(d, bool)
            else "integer"
            if isinstance(d, int)
            else "number"
            if isinstance(d, float)
            else "array"
            if isinstance(d, tuple)
            else "string"
        )
        entry: dict[str, Any] = {
            "type": kind,
            "default": list(d) if isinstance(d, tuple) else d,
            "description": f.metadata["doc"],
        }
        if isinstance(d, tuple):
            entry["items"] = (
                {"type": "string", "enum": list(f.metadata["choices"])}
                if f.metadata["choices"]
                else {"type": "integer", "minimum": 1, "maximum": 4096}
            )
        elif f.metadata["choices"]:
            entry["enum"] = list(f.metadata["choices"])
        if f.metadata["lo"] is not None:
            entry["minimum"] = f.metadata["lo"]
        if f.metadata["hi"] is not None:
            entry["maximum"] = f.metadata["hi"]
        out[f.name] = entry
    return out
