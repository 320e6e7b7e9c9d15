"""Lay holes, held text and the suffix's start onto fixed-size canvases.

One row of the canvas, for holes h1, h2 with the text m1 between them and suffix s:

    [ h1 slots ][ m1 tokens, held ][ h2 slots ][ s tokens, held ... ][ <pad>, held ]
      <- S1 ->                       <- S2 ->
    |<------------------------------ bucket length C ---------------------------->|

Hole slots get more room than any fill needs; the model ends a span with <eos>/<pad>. Canvas lengths
come from a few fixed buckets so a later engine can capture one CUDA graph per bucket.
"""

from __future__ import annotations

from dataclasses import dataclass

from .interface import BadFill

# 16: a short single-line fill (8 slots + 8 suffix tokens) costs a quarter of what a 64 canvas does on a CPU.
BUCKETS = (16, 32, 64, 128, 256, 512)


class CanvasTooSmall(BadFill):
    """The holes and the text between them do not fit on the largest canvas."""


@dataclass(frozen=True)
class RowLayout:
    ids: tuple[int, ...]  # (C,) held ids in place; -1 in hole slots
    hole: tuple[int, ...]  # (C,) hole index per slot, -1 for held positions
    slots: tuple[int, ...]  # slots per hole


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
