"""The prefix's key/value cache: encode once, reuse across keystrokes, batch across requests.

The encoder pass is causal over the prompt and writes K/V for every layer. We keep our own copy of
the *full* K/V of every layer (sliding-window layers included), so that when the user types and the
prompt's tokens change near the end, we drop the changed tail and re-encode only that, instead of
the whole prompt. The decoder then gets a DynamicCache *view* shaped exactly like the one
transformers' own encoder leaves behind (sliding layers hold their last `window - 1` positions).

The states are kept per document in the process's cache budget (model/cache_budget.py): at most
`max_entries` documents, bounded in bytes with every other cache of document text, and dropped when the
document closes.
"""

from __future__ import annotations

import inspect
import itertools
import sys
import weakref
from dataclasses import dataclass
from functools import cache as _once

import torch
from transformers.cache_utils import DynamicCache

from .cache_budget import CacheBudget, shared_budget

KV_SPACE = "prompt K/V"  # the budget's name for these entries
_serials = itertools.count(1)  # each PrefixEncoder's entries apart from another's (never reused, unlike id())


@_once
def _cache_keyword(cls: type) -> str:
    # transformers renamed `past_key_values` to `cache` (deprecated in 5.2x, gone in 5.40); older
    # releases we accept know only the old name. Passing the right one keeps fills free of warnings.
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def cache_arg(module: torch.nn.Module, cache) -> dict:
    """The keyword argument that hands `cache` to `module`'s forward, for this transformers."""
    return {_cache_keyword(type(module)): cache}


@dataclass
class PrefixState:
    ids: list[int]  # the encoded prompt tokens
    keys: list[torch.Tensor]  # per layer: (1, kv_heads, len(ids), head_dim)
    values: list[torch.Tensor]

    def __len__(self) -> int:
        return len(self.ids)

    def nbytes(self) -> int:
        """What this state holds: its K/V tensors and its token list."""
        tensors = sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))
        return tensors + sys.getsizeof(self.ids) + 32 * len(self.ids)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _crop(state: PrefixState, n: int) -> PrefixState:
    """The first n tokens of a prompt's state (causal: their K/V do not depend on what follows)."""
    return PrefixState(
        ids=state.ids[:n], keys=[k[:, :, :n] for k in state.keys], values=[v[:, :, :n] for v in state.values]
    )


class PrefixEncoder:
    """Encodes prompts with the model's encoder, reusing earlier work per document key: the states of
    the `max_entries` documents used last, within the cache budget's bytes."""

    def __init__(
        self, model: torch.nn.Module, max_entries: int = 4, chunk: int = 64, budget: CacheBudget | None = None
    ):
        self.model = model
        self.chunk = chunk  # prompts are encoded, and reused, in whole chunks of this many tokens
        text_cfg = model.config.text_config
        self.is_sliding = [t == "sliding_attention" for t in text_cfg.layer_types]
        self.window = int(text_cfg.sliding_window)
        self.max_entries = max_entries
        self.budget = budget if budget is not None else shared_budget()
        self._space = (KV_SPACE, next(_serials))
        weakref.finalize(self, self.budget.drop_space, self._space)  # a dropped model's states go with it
        self.last_reused = 0  # tokens reused by the latest encode(), for logs and tests

    def forget(self, key: str) -> None:
        self.budget.pop(self._space, key)

    def cached(self, key: str) -> PrefixState | None:
        """The state kept for `key`, if any (tests, status)."""
        return self.budget.get(self._space, key)

    @torch.inference_mode()
    def encode(self, ids: list[int], key: str | None = None) -> PrefixState:
        """K/V for `ids`; with a key, reuses the longest common prefix of that key's last prompt.

        The prompt is always encoded in chunks of `chunk` tokens that start at multiples of `chunk`,
        and only whole chunks are reused. Each chunk's computation then sees exactly the same inputs
        (the same earlier K/V, tokens and positions) whether the prompt is fresh or reused, so the K/V
        are bitwise equal: a fill does not depend on what the server filled before. (Re-encoding an
        arbitrary tail differs from a fresh encode by ~1e-7, enough to flip a sampling decision.)
        """
        if not ids:
            raise ValueError("the prompt must hold at least one token (the <bos>)")
        old = self.budget.get(self._space, key) if key is not None else None
        common = _common_prefix(old.ids, ids) if old is not None else 0
        if old is not None and common == len(ids) == len(old.ids):  # identical prompt: nothing to run
            state, keep = old, common
        else:
            keep = common // self.chunk * self.chunk
            state = _crop(old, keep) if keep else None
            for end in range(keep + self.chunk, len(ids) + self.chunk, self.chunk):
                state = self._extend(state, len(state) if state else 0, ids[: min(end, len(ids))])
        self.last_reused = keep
        if key is not None:  # the document's own entry: dropped when it closes
            self.budget.put(self._space, key, state, state.nbytes(), owner=key, max_entries=self.max_entries)
        return state

    def _extend(self, old: PrefixState | None, keep: int, ids: list[int]) -> PrefixState:
        cache = self._cache_for_encoder(old, keep)
        device = self.model.device
        tail = torch.tensor([ids[keep:]], dtype=torch.long, device=device)  # (1, t)
        positions = torch.arange(keep, len(ids), device=device)[None]  # (1, t)
        encoder = self.model.model.encoder
        encoder(input_ids=tail, position_ids=positions, use_cache=True, **cache_arg(encoder, cache))
        t = tail.shape[1]
        keys, values = [], []
        for i, layer in enumerate(cache.layers):
            # With past recording on, sliding layers keep [visible window ; tail]: the tail is last.
            new_k, new_v = layer.keys[:, :, -t:], layer.values[:, :, -t:]
            if old is not None and keep > 0:
                new_k = torch.cat([old.keys[i][:, :, :keep], new_k], dim=2)
                new_v = torch.cat([old.values[i][:, :, :keep], new_v], dim=2)
            keys.append(new_k)
            values.append(new_v)
        return PrefixState(ids=list(ids), keys=keys, values=values)

    def continuation_cache(self, state: PrefixState, keep: int) -> DynamicCache:
        """A cache holding the first `keep` prompt tokens' K/V, for the encoder to continue from (as its
        own cache would be after those tokens): left-to-right decoding from a cached prompt."""
        return self._cache_for_encoder(state, keep, record=False)

    def _cache_for_encoder(self, old: PrefixState | None, keep: int, record: bool = True) -> DynamicCache:
        cache = DynamicCache(config=self.model.config)
        for i, layer in enumerate(cache.layers):
            if self.is_sliding[i] and record:
                layer.activate_past_recording()  # keep every new position, we copy them out
            if old is None or keep == 0:
                continue
            start = max(0, keep - (self.window - 1)) if self.is_sliding[i] else 0
            k, v = old.keys[i][:, :, start:keep], old.values[i][:, :, start:keep]
            layer.lazy_initialization(k, v)
            layer.keys, layer.values = k, v
            if self.is_sliding[i]:
                layer.cumulative_length = keep
        return cache

    def decoder_cache(
        self, states: list[PrefixState], canvas_length: int, widths: list[int] | None = None
    ) -> tuple[DynamicCache, dict[str, torch.Tensor] | None, torch.Tensor]:
        """Batch several prompts' K/V into one read-only cache for the decoder.

        Returns (cache, attention masks or None, prompt lengths (batch,)). Prompts of different lengths
        are left-padded; rows whose own canvas is narrower than `canvas_length` are right-padded. The
        masks (one 4D boolean mask per layer type, True = attend) hide both kinds of padding, so each
        row computes exactly what it would alone.
        """
        widths = widths or [canvas_length] * len(states)
        lengths = [len(s) for s in states]
        device = states[0].keys[0].device
        cache = DynamicCache(config=self.model.config)
        same = all(n == lengths[0] for n in lengths)
        kv_lens: dict[str, tuple[int, list[int]]] = {}
        for i, layer in enumerate(cache.layers):
            sliding = self.is_sliding[i]
            visible = [min(n, self.window - 1) if sliding else n for n in lengths]
            width = max(visible)
            ks, vs = [], []
            for s, vis in zip(states, visible):
                k, v = s.keys[i][:, :, len(s) - vis :], s.values[i][:, :, len(s) - vis :]
                if vis < width:  # left-pad with zeros; the mask hides them
                    pad = (0, 0, width - vis, 0)
                    k, v = torch.nn.functional.pad(k, pad), torch.nn.functional.pad(v, pad)
                ks.append(k)
                vs.append(v)
            # Fresh tensors, never views: a sliding layer's keys are a slice of the prompt's (an offset
            # and strides of their own), and a compiled decoder step guards on both.
            k = torch.cat(ks, dim=0) if len(ks) > 1 else ks[0].clone(memory_format=torch.contiguous_format)
            v = torch.cat(vs, dim=0) if len(vs) > 1 else vs[0].clone(memory_format=torch.contiguous_format)
            layer.lazy_initialization(k, v)
            layer.keys, layer.values = k, v
            if sliding:
                layer.cumulative_length = max(lengths)
            kv_lens["sliding_attention" if sliding else "full_attention"] = (width, visible)
        length_t = torch.tensor(lengths, device=device)
        if same and all(w == canvas_length for w in widths):
            return cache, None, length_t
        return cache, padding_masks(kv_lens, canvas_length, widths, device), length_t


def padding_masks(
    kv_lens: dict, canvas_length: int, widths: list[int], device: torch.device
) -> dict[str, torch.Tensor]:
    """4D boolean masks (batch, 1, canvas, cached + canvas) hiding each row's prompt and canvas padding."""
    masks = {}
    for layer_type, (width, visible) in kv_lens.items():
        vis = torch.tensor(visible, device=device)[:, None]  # (batch, 1)
        cols = torch.arange(width, device=device)[None, :]  # (1, width)
        cached_ok = cols >= (width - vis)  # (batch, width)
        canvas_ok = torch.arange(canvas_length, device=device)[None, :] < torch.tensor(widths, device=device)[:, None]
        row = torch.cat([cached_ok, canvas_ok], dim=1)  # (batch, width + canvas)
        masks[layer_type] = row[:, None, None, :].expand(-1, 1, canvas_length, -1)
    return masks
