"""VllmFiller: the `Filler` interface (model/interface.py) served by a vLLM (>= 0.32) DiffusionGemma server.

    filler = VllmFiller("http://gpu-box:8000", api_key=None, timeout=30, tokenizer_path="", make_judge=make_judge)
    result = filler.fill(FillRequest(text, holes=((start, end),), language="python"), cancelled=...)

Plain Python (httpx and tokenizers; never torch or transformers). vLLM's DiffusionGemma takes per-request
`vllm_xargs` on /v1/completions: `diffusion_seed_canvas` (exactly canvas-width ids), `diffusion_pinned`
(positions held at their seed token), `diffusion_canvas_length`, `diffusion_max_steps` and
`diffusion_read_only` (one canvas is the whole output, with a log-probability for every position). That is
a canvas with held tokens, which is what a fill is, so the canvas is laid out as in-process
(model/canvas.py): hole slots seeded with uniform noise, the text between holes and the start of the
suffix pinned, then padding; the prompt is the prefix as token ids; widths come in buckets up to the
served canvas. What each in-process feature becomes here:
  * pinned tokens: vLLM returns its own argmax at pinned positions, so they are written back;
  * length candidates: concurrent requests, chosen by the syntax errors each adds, then by model score
    (the mean returned log-probability of the fill's tokens and its end token);
  * syntax repair: one more request per round, the good part of the winner pinned and the rest (from
    the token holding the first syntax error to the end of its hole) re-seeded with noise;
  * several holes: filled jointly on one canvas;
  * cancellation: the HTTP request runs on a private event-loop thread; `cancelled()` is polled every
    20 ms and, when it turns true, the request is dropped, which makes vLLM abort it;
  * no live canvas: vLLM gives no intermediate canvases (`info().live_canvas` is False); `on_step` gets
    one event per completed round.
Sampler settings that apply: max_steps (`diffusion_max_steps`, capped by the server; None: the server's
own), repair_rounds, and seed (the initial noise only: vLLM does not take a per-request seed, so a fill is
not reproducible). The entropy bound and temperature schedule are server-wide, from the checkpoint's
generation_config.json; the left-to-right decoder is not available.

The server is contacted on first use, not when the filler is made: the model name comes from
/v1/models, and two probes prove it serves a diffusion model and give the served canvas width. Any
failure there is retried by the next fill, so a vLLM that comes back needs no restart of canvas-ls.

Errors never produce an edit: `VllmUnreachable`, `VllmDied` (the connection broke mid-fill),
`VllmTimeout`, `VllmAuthError` (401/403) and `VllmServerError` are `BackendDied`s with a message for the
user; a 400 is a `BadFill` carrying vLLM's own message; a server that is not a diffusion model is a
`ModelLoadError` that says so. The API key is only ever put in the Authorization header: never in
messages, logs, `info()` or `repr()`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import math
import random
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from tokenizers import Tokenizer

from canvas_ls.model.canvas import CanvasTooSmall, RowLayout, bucket_for, lay_out, needed_length
from canvas_ls.model.interface import (
    BackendDied,
    BadFill,
    Cancelled,
    FillCancelled,
    FillerInfo,
    FillRequest,
    FillResult,
    Judge,
    JudgeFactory,
    ModelLoadError,
    OnStep,
    StepEvent,
)

log = logging.getLogger("canvas_ls.vllm")

POLL_S = 0.02  # how often a waiting fill checks its cancel flag
MAX_CONNECTIONS = 8  # the pool: length candidates and tokenizer calls run concurrently up to this
SPECIAL_NAMES = {"pad": "<pad>", "eos": "<eos>", "bos": "<bos>", "mask": "<mask>"}
PROBE_TEXT = "def add(a, b):\n    return a + b  # canvas-ls probe\n"


class VllmError(BackendDied):
    """vLLM could not serve this fill. Nothing was applied; the next fill tries again."""


class VllmUnreachable(VllmError):
    """Nothing answers at the URL (connection refused, unknown host, connect timeout)."""


class VllmDied(VllmError):
    """The connection broke while vLLM was working on the fill (the server stopped or crashed)."""


class VllmTimeout(VllmError):
    """vLLM did not answer within the timeout (setting vllmTimeout)."""


class VllmAuthError(VllmError):
    """vLLM refused the API key (401/403)."""


class VllmServerError(VllmError):
    """vLLM answered with an error of its own (5xx, an unexpected status or body)."""


class VllmBadRequest(BadFill):
    """vLLM rejected the request (400); `message` is vLLM's own."""

    def __init__(self, message: str, text: str):
        super().__init__(text)
        self.message = message


class NotDiffusionModel(ModelLoadError):
    """The server answers, but does not serve a diffusion model with vLLM's diffusion arguments."""


def display_url(url: str) -> str:
    """The URL without any user:password part, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def base_url(url: str) -> str:
    """The server root: "http://h:8000/v1/" and "http://h:8000" both give "http://h:8000"."""
    url = url.strip().rstrip("/")
    if not re.match(r"^https?://", url):
        raise ModelLoadError(f"vllmUrl must start with http:// or https://, got {display_url(url)!r}")
    return url.removesuffix("/v1")


class _Secret:
    """The API key: readable as `.value`, never shown by repr(), str() or vars() of its holder."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<hidden>"

    __str__ = __repr__


@dataclass(frozen=True)
class _Served:
    """What the first contact with the server established."""

    model: str  # the name /v1/models gives (the `model` of every request)
    width: int  # the served canvas
    max_model_len: int  # prompt + canvas must fit
    vocab: int  # noise ids are drawn from [0, vocab)
    pad: int
    bos: int | None
    ends: frozenset[int]  # tokens that end a hole's span (eos, pad, ...)
    dropped: frozenset[int]  # never part of a fill's text (bos, mask)


@dataclass
class _Row:
    """One canvas (a length candidate) and what came back for it."""

    layout: RowLayout
    ids: list[int]  # the canvas: held tokens in place, the returned ids elsewhere
    logp: list[float]  # per position, the log-probability of the returned token
    fills: tuple[str, ...] = ()
    errors: int = 0
    score: float = float("-inf")
    tokens: int = 0
    repairs: int = 0
    key: tuple = field(default=())


# ---- tokenisation without torch ----------------------------------------------------------------


class _LocalTokenizer:
    """The checkpoint's own tokenizer files through the `tokenizers` library (setting tokenizerPath)."""

    def __init__(self, path: str):
        p = Path(path).expanduser()
        file = p / "tokenizer.json" if p.is_dir() else p
        if not file.is_file():
            raise ModelLoadError(
                f"tokenizerPath {path!r}: no tokenizer.json there (give the checkpoint's directory or its tokenizer.json)"
            )
        try:
            self.tok = Tokenizer.from_file(str(file))
        except Exception as exc:  # tokenizers raises plain Exceptions with its parse error
            raise ModelLoadError(f"tokenizerPath {path!r}: cannot read {file.name}: {exc}") from exc
        self.dir = file.parent
        self.vocab = self.tok.get_vocab_size(with_added_tokens=True)

    def _json(self, name: str) -> dict:
        try:
            return json.loads((self.dir / name).read_text())
        except (OSError, ValueError):
            return {}

    def specials(self) -> dict[str, list[int]]:
        """Special token ids from the checkpoint's generation_config.json, config.json and
        tokenizer_config.json, in that order of preference."""
        found: dict[str, list[int]] = {}
        gen, cfg, tcfg = (
            self._json("generation_config.json"),
            self._json("config.json"),
            self._json("tokenizer_config.json"),
        )
        text_cfg = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else {}
        for kind in ("pad", "eos", "bos"):
            for source in (gen, text_cfg, cfg):
                value = source.get(f"{kind}_token_id")
                if value is not None:
                    found[kind] = [int(v) for v in (value if isinstance(value, list) else [value])]
                    break
        for kind, default in SPECIAL_NAMES.items():
            if kind in found:
                continue
            name = tcfg.get(f"{kind}_token", default)
            name = name.get("content") if isinstance(name, dict) else name
            tid = self.tok.token_to_id(name) if isinstance(name, str) else None
            if tid is not None:
                found[kind] = [tid]
        return found

    def random_weights(self) -> bool:
        card = self._json("canvas_ls.json")
        return bool(card.get("random_weights") or str(card.get("note", "")).startswith("random weights"))

    def encode(self, texts: list[str]) -> list[list[int]]:
        out = self.tok.encode_batch([t for t in texts if t], add_special_tokens=False)
        it = iter(out)
        return [list(next(it).ids) if t else [] for t in texts]

    def decode(self, seqs: list[list[int]]) -> list[str]:
        return [self.tok.decode(s, skip_special_tokens=False) if s else "" for s in seqs]


# ---- the filler --------------------------------------------------------------------------------


class VllmFiller:
    """A `Filler` over a vLLM server's /v1/completions. Thread-safe; the HTTP runs on its own thread."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        tokenizer_path: str = "",
        make_judge: JudgeFactory | None = None,
        *,
        max_prompt_tokens: int = 1024,
        min_suffix_tokens: int = 32,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.url = display_url(base_url(url))  # what messages and info() show
        self._base = base_url(url)
        self.timeout = float(timeout)
        self.make_judge = make_judge
        self.max_prompt_tokens = max_prompt_tokens
        self.min_suffix_tokens = min_suffix_tokens
        self._max_connections = max_connections
        self._key = _Secret(api_key) if api_key else None
        self.tokenizer_path = tokenizer_path or ""
        self._local = _LocalTokenizer(tokenizer_path) if tokenizer_path else None
        self._served: _Served | None = None
        self._start_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.AsyncClient | None = None
        self._loop_lock = threading.Lock()
        self._closed = False
        for name in ("httpx", "httpcore"):  # one line per request (httpx) or per socket event (httpcore) otherwise
            if logging.getLogger(name).level == logging.NOTSET:
                logging.getLogger(name).setLevel(logging.WARNING)

    def __repr__(self) -> str:
        return f"VllmFiller({self.url!r}, api_key={'<set>' if self._key else None}, timeout={self.timeout:g})"

    # ---- the Filler interface ----------------------------------------------------------------

    def info(self) -> FillerInfo:
        s = self._served
        return FillerInfo(
            model=s.model if s else "(vLLM not contacted yet)",
            path=self.url,
            device="vllm",
            dtype="served",
            canvas_length=s.width if s else 0,
            backend=f"vllm {self.url}",
            noise="uniform",
            random_weights=bool(self._local and self._local.random_weights()),
            live_canvas=False,
        )

    def forget(self, document: str) -> None:
        """Nothing to drop: vLLM's own prefix cache keeps (and evicts) prompt K/V."""

    def start(self, cancelled: Cancelled | None = None) -> None:
        """Contact the server now (the first fill does this otherwise). Raises as `fill` does."""
        self._start(cancelled)

    def close(self) -> None:
        """Drop the connections and stop the HTTP thread."""
        with self._loop_lock:
            self._closed = True
            loop, client, thread = self._loop, self._client, self._thread
            self._loop = self._client = self._thread = None
        if loop is None:
            return
        if client is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(5)

    def fill(
        self, request: FillRequest, on_step: OnStep | None = None, cancelled: Cancelled | None = None
    ) -> FillResult:
        t0 = time.perf_counter()
        request.validate()
        if request.decoder != "diffusion":
            raise BadFill('the vLLM backend fills with the diffusion canvas only: set decoder to "diffusion"')
        if getattr(request, "repair_threshold", None) is not None:
            raise BadFill(
                "repairing existing code is not available with the vLLM backend (backend: inprocess or shared has it)"
            )
        served = self._start(cancelled)
        try:
            return self._fill(served, request, on_step, cancelled, t0)
        except (VllmUnreachable, VllmDied):
            self._served = None  # whatever comes back at the URL is probed again
            raise

    # ---- one fill ----------------------------------------------------------------------------

    def _fill(
        self, s: _Served, req: FillRequest, on_step: OnStep | None, cancelled: Cancelled | None, t0: float
    ) -> FillResult:
        text, holes, settings = req.text, req.holes, req.settings
        judge = self.make_judge(text, holes, req.language) if (req.language and self.make_judge) else None
        prefix = text[: holes[0][0]]
        pieces = [prefix[self._window_start(prefix) :]]
        pieces += [text[a[1] : b[0]] for a, b in zip(holes, holes[1:])]
        pieces.append(text[holes[-1][1] :][: 4 * s.width])
        encoded = self._encode(s, pieces, cancelled)
        prefix_ids, middles, suffix = encoded[0], encoded[1:-1], encoded[-1]

        # The plan, as in-process: slots never exceed what the canvas holds beside the text between
        # holes and some suffix; a request's candidates share the largest bucket any of them needs.
        # A small served canvas (a 24 GB card's) keeps at most half of itself for the suffix.
        suffix_min = min(self.min_suffix_tokens, s.width // 2)
        room = s.width - sum(map(len, middles)) - min(len(suffix), suffix_min)
        per_hole = room // len(holes)
        if per_hole < 1:
            raise CanvasTooSmall(
                f"the text between the selections needs {sum(map(len, middles))} tokens; the served canvas holds {s.width}"
            )
        if req.length_candidates:
            options = [[n] for n in sorted({min(n, per_hole) for n in req.length_candidates}, reverse=True)]
        else:
            options = [[min(req.max_tokens, per_hole)] * len(holes)]
        width = max(bucket_for(needed_length(o, middles, suffix, suffix_min), s.width) for o in options)
        layouts = [lay_out(o, middles, suffix, width, s.pad) for o in options]

        bos = [s.bos] if s.bos is not None else []
        budget = min(self.max_prompt_tokens, s.max_model_len - width) - len(bos)
        if budget < 0:
            raise BadFill(
                f"vLLM's max_model_len ({s.max_model_len}) leaves no room for a prompt beside a {width}-token canvas"
            )
        prompt = bos + (prefix_ids[-budget:] if budget else [])
        if not prompt:
            prompt = [s.pad]  # vLLM needs at least one prompt token

        # Round 1: every length candidate at once.
        seeds = []
        for j, lay in enumerate(layouts):
            rng = random.Random(settings.seed + j)
            seed = [tid if tid >= 0 else rng.randrange(s.vocab) for tid in lay.ids]
            pins = [p for p, h in enumerate(lay.hole) if h < 0]
            seeds.append((seed, pins))
        answers = self._run(self._complete_many(s, prompt, width, settings.max_steps, seeds), cancelled)
        rows = []
        for lay, (seed, pins), (ids, logp) in zip(layouts, seeds, answers):
            for p in pins:
                ids[p] = seed[p]  # vLLM returns its own argmax at pinned positions
            rows.append(_Row(lay, ids, logp))
        self._evaluate(s, rows, judge, cancelled)
        best = min(rows, key=lambda r: r.key)
        rounds = 1
        if on_step is not None:
            on_step(self._event(best, rounds, settings.max_steps or 1, 0))

        # Syntax repair: the winner's good part pinned, the rest re-seeded, one request per round.
        repair_steps = max(2, settings.max_steps // 2) if settings.max_steps else None
        for r in range(1, settings.repair_rounds + 1):
            if judge is None or best.errors == 0:
                break
            reopen = self._positions_to_reopen(s, best, judge, cancelled)
            if not reopen:
                break
            rng = random.Random(settings.seed * 1009 + r)
            seed = list(best.ids)
            for p in reopen:
                seed[p] = rng.randrange(s.vocab)
            reopened = set(reopen)
            pins = [p for p in range(width) if p not in reopened]
            ((ids, logp),) = self._run(self._complete_many(s, prompt, width, repair_steps, [(seed, pins)]), cancelled)
            new_ids, new_logp = list(best.ids), list(best.logp)
            for p in reopen:
                new_ids[p], new_logp[p] = ids[p], logp[p]
            candidate = _Row(best.layout, new_ids, new_logp, repairs=best.repairs + 1)
            self._evaluate(s, [candidate], judge, cancelled)
            rounds += 1
            if on_step is not None:
                on_step(self._event(candidate, rounds, repair_steps or 1, r))
            if candidate.errors > best.errors:
                break  # the repair made it worse: keep what we had
            rows[rows.index(best)] = candidate
            best = min(rows, key=lambda row: row.key)

        return FillResult(
            fills=best.fills,
            score=best.score,
            forward_passes=0,  # vLLM does not say how many denoising steps a request took
            tokens=best.tokens,
            seconds=time.perf_counter() - t0,
            canvas_length=width,
            slots=best.layout.slots,
            candidates=len(rows),
            repairs=best.repairs,
            syntax_errors=best.errors,
            prompt_tokens=len(prompt),
            reused_prompt_tokens=0,
        )

    def _window_start(self, prefix: str) -> int:
        """Where the prompt's text starts: on a coarse grid of line starts, as in-process, so typing at
        the cursor keeps the prompt's start (and vLLM's cached prefix) in place."""
        budget = self.max_prompt_tokens * 4  # ~4 characters per token of code
        if len(prefix) <= budget:
            return 0
        grid = budget // 4
        start = math.ceil((len(prefix) - budget) / grid) * grid
        newline = prefix.find("\n", start)
        return newline + 1 if newline != -1 else start

    def _hole_ids(self, s: _Served, row: _Row, h: int) -> tuple[list[int], list[int]]:
        """Hole h's tokens up to its first end token, and the positions scored (those tokens' and the end's)."""
        out, positions = [], []
        for pos, (tid, hole) in enumerate(zip(row.ids, row.layout.hole)):
            if hole != h:
                continue
            if tid in s.ends:
                positions.append(pos)
                break
            if tid not in s.dropped:
                out.append(tid)
                positions.append(pos)
        return out, positions

    def _evaluate(self, s: _Served, rows: list[_Row], judge: Judge | None, cancelled: Cancelled | None) -> None:
        """Each row's fills, syntax errors, score and ranking key (errors first, then model score)."""
        per_row = [[self._hole_ids(s, row, h) for h in range(len(row.layout.slots))] for row in rows]
        texts = self._decode(s, [toks for holes in per_row for toks, _ in holes], cancelled)
        k = 0
        for row, holes in zip(rows, per_row):
            row.fills = tuple(texts[k : k + len(holes)])
            k += len(holes)
            row.errors = sum(len(b) for b in judge(row.fills)) if judge is not None else 0
            scored = [row.logp[p] for _, positions in holes for p in positions]
            row.score = sum(scored) / len(scored) if scored else float("-inf")
            row.tokens = sum(len(toks) for toks, _ in holes)
            row.key = (row.errors, -row.score)

    def _positions_to_reopen(self, s: _Served, row: _Row, judge: Judge, cancelled: Cancelled | None) -> list[int]:
        """From the token holding the first syntax error to the end of its hole."""
        for h, bad in enumerate(judge(row.fills)):
            if not bad:
                continue
            first_char = min(a for a, _ in bad)
            toks, _ = self._hole_ids(s, row, h)
            prefixes = self._decode(s, [toks[: k + 1] for k in range(len(toks))], cancelled)
            k = next((i for i, t in enumerate(prefixes) if len(t) > first_char), len(toks))
            return [p for p, hh in enumerate(row.layout.hole) if hh == h][k:]
        return []

    def _event(self, row: _Row, step: int, steps: int, repair: int) -> StepEvent:
        slots = sum(row.layout.slots)
        return StepEvent(
            step=step, round_step=steps, round_steps=steps, repair=repair, committed=slots, slots=slots, texts=row.fills
        )

    # ---- tokens ------------------------------------------------------------------------------

    def _encode(self, s: _Served, texts: list[str], cancelled: Cancelled | None) -> list[list[int]]:
        if self._local is not None:
            return self._local.encode(texts)
        return self._run(self._gather(*(self._tokenize(t, s.model) for t in texts)), cancelled)

    def _decode(self, s: _Served, seqs: list[list[int]], cancelled: Cancelled | None) -> list[str]:
        if self._local is not None:
            return self._local.decode(seqs)
        return self._run(self._gather(*(self._detokenize(ids, s.model) for ids in seqs)), cancelled)

    async def _tokenize(self, text: str, model: str) -> list[int]:
        if not text:
            return []
        answer = await self._post("/tokenize", {"model": model, "prompt": text, "add_special_tokens": False})
        return [int(t) for t in answer["tokens"]]

    async def _detokenize(self, ids: list[int], model: str) -> str:
        if not ids:
            return ""
        return (await self._post("/detokenize", {"model": model, "tokens": ids}))["prompt"]

    @staticmethod
    async def _gather(*coros):
        return list(await asyncio.gather(*coros))

    # ---- first contact -------------------------------------------------------------------------

    def _start(self, cancelled: Cancelled | None) -> _Served:
        served = self._served
        if served is not None:
            return served
        while not self._start_lock.acquire(timeout=POLL_S):
            if cancelled is not None and cancelled():
                raise FillCancelled()
        try:
            if self._served is None:
                self._served = self._run(self._probe(), cancelled)
                log.info(
                    "vLLM at %s serves %s: canvas %d, max_model_len %d",
                    self.url,
                    self._served.model,
                    self._served.width,
                    self._served.max_model_len,
                )
            return self._served
        finally:
            self._start_lock.release()

    async def _probe(self) -> _Served:
        models = (await self._request("GET", "/v1/models", None)).get("data") or []
        if not models:
            raise NotDiffusionModel(f"vLLM at {self.url} lists no model at /v1/models")
        model = str(models[0]["id"])
        max_model_len = int(models[0].get("max_model_len") or 0) or 4096

        if self._local is not None:
            found = self._local.specials()
            # The tokenizer files must be the served model's: compare one encoding with vLLM's own.
            local = self._local.encode([PROBE_TEXT])[0]
            served_ids = await self._tokenize(PROBE_TEXT, model)
            if local != served_ids:
                raise ModelLoadError(
                    f"tokenizerPath {self.tokenizer_path!r} does not tokenize like {model} served at {self.url}: "
                    "point it at the served checkpoint's tokenizer, or leave it empty to use vLLM's /tokenize"
                )
        else:
            found = {}
            names = list(SPECIAL_NAMES.items())
            got = await self._gather(*(self._tokenize(name, model) for _, name in names))
            for (kind, _), ids in zip(names, got):
                if len(ids) == 1:
                    found[kind] = ids
        pad = (found.get("pad") or found.get("eos") or [None])[0]
        if pad is None:
            raise ModelLoadError(
                f"cannot find the <pad> or <eos> token of {model}: set tokenizerPath to its checkpoint directory"
            )
        bos = (found.get("bos") or [None])[0]
        ends = frozenset(found.get("eos", [])) | {pad}
        dropped = frozenset(i for i in (bos, *(found.get("mask") or [])) if i is not None)
        first = [bos if bos is not None else pad]

        # Probe 1 (cheap whatever the model is): a seed id beyond any vocabulary. A diffusion model
        # rejects it (400, naming diffusion_seed_canvas and the vocabulary size); any other model
        # ignores diffusion arguments and answers one token.
        try:
            await self._post(
                "/v1/completions",
                {
                    "model": model,
                    "prompt": first,
                    "max_tokens": 1,
                    "vllm_xargs": {
                        "diffusion_canvas_length": 1,
                        "diffusion_seed_canvas": [2**31 - 1],
                        "diffusion_read_only": 1,
                    },
                },
            )
        except VllmBadRequest as exc:
            if "diffusion_seed_canvas" not in exc.message:
                raise NotDiffusionModel(
                    f"vLLM at {self.url} serves {model}, which is not a diffusion model: it rejected "
                    f"canvas-ls's diffusion arguments ({exc.message}). canvas-ls needs a DiffusionGemma "
                    "checkpoint served by vLLM >= 0.32"
                ) from None
            m = re.search(r"in \[0, (\d+)\)", exc.message)
            server_vocab = int(m.group(1)) if m else None
        else:
            raise NotDiffusionModel(
                f"vLLM at {self.url} serves {model}, which is not a diffusion model (it ignores "
                "diffusion_* arguments). canvas-ls needs a DiffusionGemma checkpoint served by vLLM >= 0.32"
            )

        # Probe 2 (diffusion_read_only): one whole canvas with a log-probability for every position;
        # its length is the served canvas width.
        answer = await self._post(
            "/v1/completions",
            {
                "model": model,
                "prompt": first,
                "max_tokens": max(1, max_model_len - len(first)),
                "logprobs": 0,
                "return_token_ids": True,
                "vllm_xargs": {"diffusion_read_only": 1, "diffusion_max_steps": 1},
            },
        )
        ids, logp, finish = self._canvas_of(answer)
        if not ids or len(logp) != len(ids) or finish != "length":
            raise NotDiffusionModel(
                f"vLLM at {self.url} serves {model}, but a diffusion_read_only request did not return "
                "one canvas with a log-probability per position: not a diffusion model canvas-ls can use"
            )
        known = [v for v in (server_vocab, self._local.vocab if self._local else None) if v]
        # Neither the server's message nor a tokenizer file said: stay below the ids seen so far.
        vocab = min(known) if known else max([*ids, *found.get("eos", []), pad]) + 1
        return _Served(
            model=model,
            width=len(ids),
            max_model_len=max_model_len,
            vocab=vocab,
            pad=pad,
            bos=bos,
            ends=ends,
            dropped=dropped,
        )

    # ---- HTTP ----------------------------------------------------------------------------------

    async def _complete_many(
        self, s: _Served, prompt: list[int], width: int, steps: int | None, seeds: list[tuple[list[int], list[int]]]
    ) -> list[tuple[list[int], list[float]]]:
        """One read-only canvas per (seed, pins), concurrently. steps None: the server's own budget (the
        checkpoint's max_denoising_steps; vLLM caps any larger value there too)."""

        async def one(seed: list[int], pins: list[int]):
            xargs = {
                "diffusion_seed_canvas": seed,
                "diffusion_pinned": pins,
                "diffusion_canvas_length": width,
                "diffusion_read_only": 1,
            }
            if steps:
                xargs["diffusion_max_steps"] = steps
            answer = await self._post(
                "/v1/completions",
                {
                    "model": s.model,
                    "prompt": prompt,
                    "max_tokens": width,
                    "logprobs": 0,
                    "return_token_ids": True,
                    "vllm_xargs": xargs,
                },
            )
            ids, logp, _ = self._canvas_of(answer)
            if len(ids) != width or len(logp) != width:
                raise VllmServerError(
                    f"vLLM at {self.url} returned {len(ids)} canvas tokens for a {width}-token canvas"
                )
            return ids, logp

        return await self._gather(*(one(seed, pins) for seed, pins in seeds))

    def _canvas_of(self, answer: dict) -> tuple[list[int], list[float], str | None]:
        try:
            choice = answer["choices"][0]
            ids = [int(t) for t in choice.get("token_ids") or []]
            lps = (choice.get("logprobs") or {}).get("token_logprobs") or []
            logp = [float(x) if x is not None else float("-inf") for x in lps]
            return ids, logp, choice.get("finish_reason")
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise VllmServerError(
                f"vLLM at {self.url} answered /v1/completions with an unexpected body ({exc!r})"
            ) from None

    async def _post(self, path: str, body: dict) -> Any:
        return await self._request("POST", path, body)

    async def _request(self, method: str, path: str, body: dict | None) -> Any:
        client = self._client
        where = f"vLLM at {self.url}"
        try:
            headers = {"Authorization": f"Bearer {self._key.value}"} if self._key else None
            r = await client.request(method, self._base + path, json=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise VllmUnreachable(f"cannot reach {where} ({_reason(exc)}): is it running? (setting vllmUrl)") from None
        except httpx.TimeoutException:
            raise VllmTimeout(
                f"{where} did not answer {path} within {self.timeout:g} s (setting vllmTimeout); nothing was applied"
            ) from None
        except httpx.TransportError as exc:
            raise VllmDied(
                f"{where} broke the connection during {path} ({_reason(exc)}): did it stop? "
                "Nothing was applied; the next fill tries again"
            ) from None
        if r.status_code == 200:
            try:
                return r.json()
            except ValueError:
                raise VllmServerError(f"{where} answered {path} with something that is not JSON") from None
        message = _error_message(r)
        if r.status_code in (401, 403):
            raise VllmAuthError(
                f"{where} refused the API key ({r.status_code}: {message}); set the key in the environment "
                "variable named by the setting vllmApiKeyEnv"
            )
        if r.status_code == 400:
            raise VllmBadRequest(message, f"{where} rejected the request: {message}")
        if r.status_code == 404 and path in ("/tokenize", "/detokenize"):
            raise ModelLoadError(f"{where} has no {path} endpoint: set tokenizerPath to the checkpoint's directory")
        raise VllmServerError(f"{where} answered {path} with {r.status_code}: {message}")

    # ---- the event-loop thread -------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._loop_lock:
            if self._closed:
                raise VllmError("this vLLM connection was closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="canvas-vllm-http", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
                self._client = self._new_client()
            return self._loop

    def _new_client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(
            max_connections=self._max_connections,
            max_keepalive_connections=self._max_connections,
            keepalive_expiry=30.0,
        )
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))
        return httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False)

    def _run(self, coro, cancelled: Cancelled | None):
        """Run a coroutine on the HTTP thread; poll `cancelled` while waiting. On cancel the request is
        dropped (vLLM aborts a request whose connection closes) and FillCancelled raised at once."""
        loop = self._ensure_loop()
        fut = asyncio.run_coroutine_threadsafe(coro, loop)
        while not fut.done():
            if cancelled is not None and cancelled():
                fut.cancel()
                raise FillCancelled()
            concurrent.futures.wait([fut], timeout=POLL_S)
        try:
            return fut.result()
        except (VllmUnreachable, VllmDied):
            self._reset_client()  # connections to a server that went away are of no use
            raise
        except concurrent.futures.CancelledError:
            raise FillCancelled() from None

    def _reset_client(self) -> None:
        with self._loop_lock:
            loop, old = self._loop, self._client
            if loop is None or old is None:
                return
            self._client = self._new_client()
        asyncio.run_coroutine_threadsafe(old.aclose(), loop)


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


def _error_message(r: httpx.Response) -> str:
    """vLLM's own message from an error answer ({"error": {"message": ...}} or {"message": ...})."""
    try:
        body = r.json()
    except ValueError:
        return (r.text or r.reason_phrase or "").strip()[:500]
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if body.get("message"):
            return str(body["message"])
        if body.get("detail"):
            return str(body["detail"])
    return json.dumps(body)[:500]
