"""VllmConnection: the HTTP side of the vLLM backend (httpx on a private event-loop thread).

vLLM's DiffusionGemma takes per-request `vllm_xargs` on /v1/completions: `diffusion_seed_canvas` (exactly
canvas-width ids), `diffusion_pinned` (positions held at their seed token), `diffusion_canvas_length`,
`diffusion_max_steps` and `diffusion_read_only` (one canvas is the whole output, with a log-probability
for every position). `complete_many` sends one such read-only canvas per seed, concurrently, over a pool
of up to `max_connections` connections; /tokenize and /detokenize serve the tokens when no tokenizerPath
is set.

Cancellation: every request runs on a private event-loop thread; `run` polls `cancelled()` every 20 ms
and, when it turns true, drops the request, which makes vLLM abort it. A connection that broke
(`VllmUnreachable`, `VllmDied`) is replaced by a fresh pool. HTTP failures become the errors of
errors.py; the API key goes into the Authorization header and nowhere else.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from typing import Any

import httpx

from canvas_ls.model.interface import Cancelled, FillCancelled, ModelLoadError

from .errors import (
    Secret,
    VllmAuthError,
    VllmBadRequest,
    VllmDied,
    VllmError,
    VllmServerError,
    VllmTimeout,
    VllmUnreachable,
    display_url,
    error_message,
    reason,
)

POLL_S = 0.02  # how often a waiting fill checks its cancel flag
MAX_CONNECTIONS = 8  # the pool: length candidates and tokenizer calls run concurrently up to this

Seeds = list[tuple[list[int], list[int]]]  # (seed canvas, pinned positions) per request


async def gather(*coros) -> list:
    """asyncio.gather as a list."""
    return list(await asyncio.gather(*coros))


class VllmConnection:
    """One vLLM server over HTTP. Thread-safe; the requests run on its own event-loop thread.

    What the filler and first contact use:
      * from any thread: `run(coro, cancelled)`, and the blocking `complete`, `encode`, `decode`, `close`;
      * coroutines for `run`: `request`, `post`, `complete_many`, `tokenize`, `detokenize`;
      * `canvas_of(answer)`: the ids, log-probabilities and finish reason of a /v1/completions answer.
    """

    def __init__(self, base: str, api_key: str | None, timeout: float, max_connections: int = MAX_CONNECTIONS):
        self.url = display_url(base)  # what messages show
        self.timeout = float(timeout)
        self._base = base
        self._key = Secret(api_key) if api_key else None
        self._max_connections = max_connections
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.AsyncClient | None = None
        self._loop_lock = threading.Lock()
        self._closed = False
        for name in ("httpx", "httpcore"):  # one line per request (httpx) or per socket event (httpcore) otherwise
            if logging.getLogger(name).level == logging.NOTSET:
                logging.getLogger(name).setLevel(logging.WARNING)

    def __repr__(self) -> str:
        return f"VllmConnection({self.url!r}, api_key={'<set>' if self._key else None}, timeout={self.timeout:g})"

    @property
    def has_key(self) -> bool:
        return self._key is not None

    # ---- blocking calls ------------------------------------------------------------------------

    def run(self, coro, cancelled: Cancelled | None):
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

    def complete(
        self, model: str, prompt: list[int], width: int, steps: int | None, seeds: Seeds, cancelled: Cancelled | None
    ) -> list[tuple[list[int], list[float]]]:
        """`complete_many`, waited for."""
        return self.run(self.complete_many(model, prompt, width, steps, seeds), cancelled)

    def encode(self, texts: list[str], model: str, cancelled: Cancelled | None) -> list[list[int]]:
        """Token ids of each text, through vLLM's /tokenize."""
        return self.run(gather(*(self.tokenize(t, model) for t in texts)), cancelled)

    def decode(self, seqs: list[list[int]], model: str, cancelled: Cancelled | None) -> list[str]:
        """The text of each id sequence, through vLLM's /detokenize."""
        return self.run(gather(*(self.detokenize(ids, model) for ids in seqs)), cancelled)

    def close(self) -> None:
        """Drop the connections and stop the HTTP thread; later calls raise VllmError."""
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

    # ---- coroutines (run them with `run`) ------------------------------------------------------

    async def complete_many(
        self, model: str, prompt: list[int], width: int, steps: int | None, seeds: Seeds
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
            answer = await self.post(
                "/v1/completions",
                {
                    "model": model,
                    "prompt": prompt,
                    "max_tokens": width,
                    "logprobs": 0,
                    "return_token_ids": True,
                    "vllm_xargs": xargs,
                },
            )
            ids, logp, _ = self.canvas_of(answer)
            if len(ids) != width or len(logp) != width:
                raise VllmServerError(
                    f"vLLM at {self.url} returned {len(ids)} canvas tokens for a {width}-token canvas"
                )
            return ids, logp

        return await gather(*(one(seed, pins) for seed, pins in seeds))

    def canvas_of(self, answer: dict) -> tuple[list[int], list[float], str | None]:
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

    async def tokenize(self, text: str, model: str) -> list[int]:
        if not text:
            return []
        answer = await self.post("/tokenize", {"model": model, "prompt": text, "add_special_tokens": False})
        return [int(t) for t in answer["tokens"]]

    async def detokenize(self, ids: list[int], model: str) -> str:
        if not ids:
            return ""
        return (await self.post("/detokenize", {"model": model, "tokens": ids}))["prompt"]

    async def post(self, path: str, body: dict) -> Any:
        return await self.request("POST", path, body)

    async def request(self, method: str, path: str, body: dict | None) -> Any:
        client = self._client
        where = f"vLLM at {self.url}"
        try:
            headers = {"Authorization": f"Bearer {self._key.value}"} if self._key else None
            r = await client.request(method, self._base + path, json=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise VllmUnreachable(f"cannot reach {where} ({reason(exc)}): is it running? (setting vllmUrl)") from None
        except httpx.TimeoutException:
            raise VllmTimeout(
                f"{where} did not answer {path} within {self.timeout:g} s (setting vllmTimeout); nothing was applied"
            ) from None
        except httpx.TransportError as exc:
            raise VllmDied(
                f"{where} broke the connection during {path} ({reason(exc)}): did it stop? "
                "Nothing was applied; the next fill tries again"
            ) from None
        if r.status_code == 200:
            try:
                return r.json()
            except ValueError:
                raise VllmServerError(f"{where} answered {path} with something that is not JSON") from None
        message = error_message(r)
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

    def _reset_client(self) -> None:
        with self._loop_lock:
            loop, old = self._loop, self._client
            if loop is None or old is None:
                return
            self._client = self._new_client()
        asyncio.run_coroutine_threadsafe(old.aclose(), loop)
