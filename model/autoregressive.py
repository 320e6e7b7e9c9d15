"""Left-to-right decoding with the same weights: the encoder pass plus the LM head, one token per pass.

DiffusionGemma's encoder is an ordinary causal LM over the prompt (the checkpoints trained here carry an
autoregressive loss on it), so the same weights can also continue text token by token. That is our
like-for-like baseline for "diffusion vs autoregressive": forward passes per token and wall time at
equal quality. It sees only the text before the hole, as a plain left-to-right model does.

Token healing: a prefix that stops inside what the tokenizer would write as one token ("return " ends in
a lone space token that training text almost never has before a word) sends a left-to-right model off
course: the bundled model continued "    return " with "# type: ignore[return-value]". So the prompt's
last token is taken back and the first new token must start with its text (" " -> " a", " (", ...);
that text is cut off the fill again, which then starts exactly at the cursor. (The canvas needs none:
model/training/data.py cuts its training text at any character and tokenizes the pieces apart, as
inference does; healing the canvas left 74% of the development set's fills empty.)
"""

from __future__ import annotations

import itertools
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import torch

from .cache_budget import shared_budget
from .interface import Cancelled, FillCancelled, FillRequest, FillResult
from .kv import cache_arg

HEAL_SPACE = "token-healing masks"
_serials = itertools.count(1)

if TYPE_CHECKING:
    from .kv import PrefixEncoder
    from .loading import LoadedModel
    from .text import TokenText


@torch.inference_mode()
def decode_left_to_right(
    model: torch.nn.Module,
    prompt_ids: list[int],
    max_new_tokens: int,
    stop_ids: set[int],
    *,
    stop: Callable[[list[int]], bool] | None = None,
    cancelled: Callable[[], bool] | None = None,
    cache=None,
    cached: int = 0,
    first_allowed: torch.Tensor | None = None,
) -> tuple[list[int], int]:
    """Greedy continuation of `prompt_ids`. Returns (new token ids without the stop token, forward passes).

    stop(new_ids) may end decoding early (e.g. at the end of a line for single-line completions).
    cache: a DynamicCache that already holds the K/V of prompt_ids[:cached] (the Infiller's prompt
    cache, so a keystroke re-encodes only what changed); the first pass encodes the rest (at least one
    token: the one whose logits give the first new token).
    first_allowed: (vocab,) bool, the only tokens the first new one may be (token healing).
    """
    device = model.device
    if cache is None:
        from transformers.cache_utils import DynamicCache

        cache, cached = DynamicCache(config=model.config), 0
    if not 0 <= cached < len(prompt_ids):
        raise ValueError(
            f"cached must leave at least one of the {len(prompt_ids)} prompt tokens to encode, got {cached}"
        )
    softcap = model.config.text_config.final_logit_softcapping
    ids = torch.tensor([prompt_ids[cached:]], device=device)  # (1, prompt)
    positions = torch.arange(cached, len(prompt_ids), device=device)[None]
    out: list[int] = []
    passes = 0
    while len(out) < max_new_tokens:
        if cancelled is not None and cancelled():
            raise FillCancelled()
        encoder = model.model.encoder
        hidden = encoder(
            input_ids=ids, position_ids=positions, use_cache=True, **cache_arg(encoder, cache)
        ).last_hidden_state
        logits = model.lm_head(hidden[:, -1]).float()  # (1, vocab)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        passes += 1
        if first_allowed is not None and not out:
            logits = logits.masked_fill(~first_allowed[: logits.shape[-1]], float("-inf"))
        token = int(logits.argmax(-1))
        if token in stop_ids:
            break
        out.append(token)
        if stop is not None and stop(out):
            break
        ids = torch.tensor([[token]], device=device)
        positions = positions[:, -1:] + 1
    return out, passes


class DraftHost(Protocol):
    """What the left-to-right draft needs of the in-process model it drives (the Infiller)."""

    loaded: LoadedModel
    prefix: PrefixEncoder  # the documents' prompt K/V, shared with canvas fills
    text: TokenText

    def prompt_ids(self, prefix: str) -> list[int]: ...


class LeftToRight:
    """The left-to-right fill of one hole: the same weights, one token a pass (Infiller.draft)."""

    def __init__(self, host: DraftHost):
        self.host = host
        # heal's allowed tokens by healed text: (vocab,) bool each, in the process's cache budget
        # (model/cache_budget.py), the last 64 texts at most, none kept once a document closes
        self.budget = shared_budget()
        self._space = (HEAL_SPACE, next(_serials))
        weakref.finalize(self, self.budget.drop_space, self._space)

    def fill(self, request: FillRequest, *, cancelled: Cancelled | None = None) -> FillResult:
        """The same weights decoding the hole left to right (one hole, prefix only). The prompt's K/V
        come from (and stay in) the document's prompt cache, as a canvas fill's do."""
        t0 = time.perf_counter()
        request.validate()
        host, text_of = self.host, self.host.text
        prompt = host.prompt_ids(request.text[: request.holes[0][0]])
        prompt, healed, allowed = self.heal(prompt) if request.settings.token_healing else (prompt, "", None)
        state = host.prefix.encode(prompt, key=request.document)
        reused = host.prefix.last_reused
        cached = len(prompt) - 1  # the last prompt token runs again: its logits give the first new token
        # a single line ends at its first line break after the healed text
        stop = (lambda ids: "\n" in text_of.decode(ids)[len(healed) :]) if request.single_line else None
        ids, passes = decode_left_to_right(
            host.loaded.model,
            prompt,
            request.max_tokens,
            set(text_of.vocab.ends | text_of.vocab.dropped),
            stop=stop,
            cancelled=cancelled,
            cache=host.prefix.continuation_cache(state, cached),
            cached=cached,
            first_allowed=allowed,
        )
        text = text_of.decode(ids)
        if not text.startswith(healed):  # cannot happen with a mask that held; never write before the cursor
            raise RuntimeError(f"token healing: the draft {text!r} does not start with {healed!r}")
        text = text[len(healed) :]
        if request.single_line and "\n" in text:
            text = text[: text.index("\n") + 1]
        return FillResult(
            fills=(text,),
            score=0.0,
            forward_passes=passes,
            tokens=len(ids),
            seconds=time.perf_counter() - t0,
            canvas_length=0,
            slots=(request.max_tokens,),
            candidates=1,
            repairs=0,
            syntax_errors=0,
            prompt_tokens=len(prompt),
            reused_prompt_tokens=reused,
            steps=passes,
            sampler="autoregressive",
        )

    def heal(self, prompt: list[int]) -> tuple[list[int], str, torch.Tensor | None]:
        """(prompt without its last token, that token's text, (vocab,) bool of the tokens that start with
        it), or the prompt unchanged, "" and None when there is nothing to heal (only <bos> left)."""
        vocab, text_of = self.host.text.vocab, self.host.text
        banned = vocab.ends | vocab.dropped
        if len(prompt) < 3 or prompt[-1] in banned:
            return prompt, "", None
        healed = text_of.decode(prompt[-1:])
        if not healed or "\ufffd" in healed:  # part of a character: no token's own text starts with it
            return prompt, "", None
        allowed = self.budget.get(self._space, healed)
        if allowed is None:
            allowed = torch.tensor(
                [t.startswith(healed) and i not in banned for i, t in enumerate(text_of.token_texts())],
                device=self.host.loaded.device,
            )
            self.budget.put(self._space, healed, allowed, allowed.numel() + 100, owner=None, max_entries=64)
        return prompt[:-1], healed, allowed
