"""Lay holes, held text and the suffix's start onto fixed-size canvases.

One row of the canvas, for holes h1, h2 with the text m1 between them and suffix s:

    [ h1 slots ][ m1 tokens, held ][ h2 slots ][ s tokens, held ... ][ <pad>, held ]
      <- S1 ->                       <- S2 ->
    |<------------------------------ bucket length C ---------------------------->|

Hole slots get more room than any fill needs; the model ends a span with <eos>/<pad>. Canvas lengths
come from a few fixed buckets so a later engine can capture one CUDA graph per bucket.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .interface import BadFill

if TYPE_CHECKING:  # this module stays torch-free: the vLLM backend lays canvases out without torch
    import torch

    from .kv import PrefixState

# 16: a short single-line fill (8 slots + 8 suffix tokens) costs a quarter of what a 64 canvas does on a CPU.
BUCKETS = (16, 32, 64, 128, 256, 512)


class CanvasTooSmall(BadFill):
    """The holes and the text between them do not fit on the largest canvas."""


@dataclass(frozen=True)
class RowLayout:
    ids: tuple[int, ...]  # (C,) held ids in place; -1 in hole slots
    hole: tuple[int, ...]  # (C,) hole index per slot, -1 for held positions
    slots: tuple[int, ...]  # slots per hole


@dataclass
class Row:
    """One canvas row of a batch: a request's candidate (slot counts) laid out, with its prompt."""

    request: int  # index of its request in the batch
    layout: RowLayout
    state: PrefixState  # the prompt's K/V (model/kv.py)
    seed: int
    width: int  # the row's own canvas length (the batch may be wider)


def bucket_for(needed: int, max_length: int) -> int:
    for b in BUCKETS:
        if needed <= b <= max_length:
            return b
    if needed <= max_length:
        return max_length
    raise CanvasTooSmall(f"the fill needs a canvas of {needed} tokens; this model's canvas holds {max_length}")


def lay_out(slots: list[int], middles: list[list[int]], suffix: list[int], length: int, pad_id: int) -> RowLayout:
    """One canvas row of `length` tokens. len(middles) == len(slots) - 1."""
    ids: list[int] = []
    hole: list[int] = []
    for h, n in enumerate(slots):
        ids += [-1] * n
        hole += [h] * n
        if h < len(middles):
            ids += middles[h]
            hole += [-1] * len(middles[h])
    if len(ids) > length:
        raise CanvasTooSmall(f"holes and the text between them need {len(ids)} tokens; the canvas holds {length}")
    room = length - len(ids)
    tail = suffix[:room] + [pad_id] * max(0, room - len(suffix))
    ids += tail
    hole += [-1] * len(tail)
    return RowLayout(ids=tuple(ids), hole=tuple(hole), slots=tuple(slots))


def needed_length(slots: list[int], middles: list[list[int]], suffix: list[int], suffix_min: int) -> int:
    """Tokens a row needs: all slots and middles, plus up to `suffix_min` tokens of the suffix."""
    return sum(slots) + sum(len(m) for m in middles) + min(len(suffix), suffix_min)


# ---- a batch of canvas rows on the device, as the denoising loops take and give it ----------------


@dataclass(frozen=True)
class NoiseSpec:
    kind: str  # "uniform" | "absorbing"
    vocab_size: int
    mask_id: int | None
    pad_id: int
    end_ids: tuple[int, ...]  # tokens that end a hole's span: eos and pad
    banned_ids: tuple[int, ...]  # never sampled into a canvas: bos, mask

    def for_reference(self) -> NoiseSpec:
        """The reference sampler's noise, as generate() has it: nothing banned, except <mask> under
        absorbing noise (where it means "noise")."""
        return replace(self, banned_ids=(self.mask_id,) if self.kind == "absorbing" else ())


@dataclass
class CanvasBatch:
    ids: torch.Tensor  # (batch, canvas) long: held tokens in place; hole slots arbitrary
    held: torch.Tensor  # (batch, canvas) bool: never re-noised, never resampled
    hole: torch.Tensor  # (batch, canvas) long: hole index of each slot, -1 for held positions
    widths: list[int] | None = None  # each row's own canvas length; columns past it are padding


@dataclass(frozen=True)
class CanvasStep:
    """The whole batch after one denoising step; the Infiller turns it into each request's StepEvent."""

    step: int  # forward passes so far (1-based)
    ids: torch.Tensor  # (batch, canvas) the canvas after the step
    open: torch.Tensor  # (batch, canvas) bool: positions still noise
    round_step: tuple[int, ...]  # per row: steps taken in its current round
    round_steps: tuple[int, ...]  # per row: that round's budget
    repairs: tuple[int, ...]  # per row: repair rounds started
    active: tuple[bool, ...]  # per row: still denoising


@dataclass
class DenoiseOutput:
    ids: torch.Tensor  # (batch, canvas) final canvas
    token_logp: torch.Tensor  # (batch, canvas) log-probability of each committed token when committed
    forward_passes: int
    repairs: list[int]  # repair rounds (commit) or syntax corrections (reference) each row used
    steps: list[int] = field(default_factory=list)  # forward passes each row took part in while denoising
    errors_found: list[int] = field(default_factory=list)  # syntax errors the judge found while denoising
    stopped_early: list[bool] = field(default_factory=list)  # reference: stopped by the stopping criteria
    # reference with keep_last: the argmax canvases of the last steps before the final one, each as
    # (ids (batch, canvas) with held tokens in place, log-probability of each argmax token (batch, canvas),
    # the rows still denoising at that step): fills that compete with the final one (Infiller._pick)
    history: list[tuple[torch.Tensor, torch.Tensor, list[bool]]] = field(default_factory=list)
