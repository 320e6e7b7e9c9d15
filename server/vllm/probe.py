"""First contact with a vLLM server: `probe` finds what it serves and returns it as a `Served`.

The server is contacted on first use, not when the filler is made: the model name comes from
/v1/models, the special tokens from the checkpoint's files (tokenizerPath, whose encoding must match the
server's) or from vLLM's /tokenize, and two probes prove it serves a diffusion model and give the served
canvas width. Any failure here is retried by the next fill, so a vLLM that comes back needs no restart
of canvas-ls.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from canvas_ls.model.interface import ModelLoadError

from .errors import NotDiffusionModel, VllmBadRequest
from .http import VllmConnection, gather
from .tokenizer import SPECIAL_NAMES, LocalTokenizer

PROBE_TEXT = "def add(a, b):\n    return a + b  # canvas-ls probe\n"


@dataclass(frozen=True)
class Served:
    """What the first contact with the server established."""

    model: str  # the name /v1/models gives (the `model` of every request)
    width: int  # the served canvas
    max_model_len: int  # prompt + canvas must fit
    vocab: int  # noise ids are drawn from [0, vocab)
    pad: int
    bos: int | None
    ends: frozenset[int]  # tokens that end a hole's span (eos, pad, ...)
    dropped: frozenset[int]  # never part of a fill's text (bos, mask)


async def probe(conn: VllmConnection, local: LocalTokenizer | None, tokenizer_path: str) -> Served:
    """What `conn`'s server serves; raises NotDiffusionModel (or ModelLoadError) if canvas-ls cannot use it."""
    models = (await conn.request("GET", "/v1/models", None)).get("data") or []
    if not models:
        raise NotDiffusionModel(f"vLLM at {conn.url} lists no model at /v1/models")
    model = str(models[0]["id"])
    max_model_len = int(models[0].get("max_model_len") or 0) or 4096

    found = await special_tokens(conn, local, tokenizer_path, model)
    pad = (found.get("pad") or found.get("eos") or [None])[0]
    if pad is None:
        raise ModelLoadError(
            f"cannot find the <pad> or <eos> token of {model}: set tokenizerPath to its checkpoint directory"
        )
    bos = (found.get("bos") or [None])[0]
    ends = frozenset(found.get("eos", [])) | {pad}
    dropped = frozenset(i for i in (bos, *(found.get("mask") or [])) if i is not None)
    first = [bos if bos is not None else pad]

    server_vocab = await vocab_if_diffusion(conn, model, first)
    ids = await served_canvas(conn, model, first, max_model_len)
    known = [v for v in (server_vocab, local.vocab if local else None) if v]
    # Neither the server's message nor a tokenizer file said: stay below the ids seen so far.
    vocab = min(known) if known else max([*ids, *found.get("eos", []), pad]) + 1
    return Served(
        model=model,
        width=len(ids),
        max_model_len=max_model_len,
        vocab=vocab,
        pad=pad,
        bos=bos,
        ends=ends,
        dropped=dropped,
    )


async def special_tokens(
    conn: VllmConnection, local: LocalTokenizer | None, tokenizer_path: str, model: str
) -> dict[str, list[int]]:
    """The ids of pad, eos, bos and mask that can be found: from the tokenizer files, after checking that
    they tokenize like the server, or else each name through /tokenize (kept where it is one token)."""
    if local is not None:
        found = local.specials()
        # The tokenizer files must be the served model's: compare one encoding with vLLM's own.
        local_ids = local.encode([PROBE_TEXT])[0]
        served_ids = await conn.tokenize(PROBE_TEXT, model)
        if local_ids != served_ids:
            raise ModelLoadError(
                f"tokenizerPath {tokenizer_path!r} does not tokenize like {model} served at {conn.url}: "
                "point it at the served checkpoint's tokenizer, or leave it empty to use vLLM's /tokenize"
            )
        return found
    found = {}
    names = list(SPECIAL_NAMES.items())
    got = await gather(*(conn.tokenize(name, model) for _, name in names))
    for (kind, _), ids in zip(names, got):
        if len(ids) == 1:
            found[kind] = ids
    return found


async def vocab_if_diffusion(conn: VllmConnection, model: str, first: list[int]) -> int | None:
    """Probe 1 (cheap whatever the model is): a seed id beyond any vocabulary. A diffusion model rejects
    it (400, naming diffusion_seed_canvas and the vocabulary size); any other model ignores diffusion
    arguments and answers one token. Returns the vocabulary size the rejection names, if it does."""
    try:
        await conn.post(
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
                f"vLLM at {conn.url} serves {model}, which is not a diffusion model: it rejected "
                f"canvas-ls's diffusion arguments ({exc.message}). canvas-ls needs a DiffusionGemma "
                "checkpoint served by vLLM >= 0.32"
            ) from None
        m = re.search(r"in \[0, (\d+)\)", exc.message)
        return int(m.group(1)) if m else None
    raise NotDiffusionModel(
        f"vLLM at {conn.url} serves {model}, which is not a diffusion model (it ignores "
        "diffusion_* arguments). canvas-ls needs a DiffusionGemma checkpoint served by vLLM >= 0.32"
    )


async def served_canvas(conn: VllmConnection, model: str, first: list[int], max_model_len: int) -> list[int]:
    """Probe 2 (diffusion_read_only): one whole canvas with a log-probability for every position; its
    length is the served canvas width. Returns its ids."""
    answer = await conn.post(
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
    ids, logp, finish = conn.canvas_of(answer)
    if not ids or len(logp) != len(ids) or finish != "length":
        raise NotDiffusionModel(
            f"vLLM at {conn.url} serves {model}, but a diffusion_read_only request did not return "
            "one canvas with a log-probability per position: not a diffusion model canvas-ls can use"
        )
    return ids
