"""The fill plan: how a `FillRequest` becomes canvases, and how their outputs become a fill. Written
once, for every backend (in-process, the shared engine, vLLM); torch-free. The backends differ only in
how they run a canvas.

    texts = plan_texts(request, limits)              # the prompt window, the text between holes, the suffix
    plan = plan_fill(request, encode(texts), vocab, limits)
    plan.prompt, plan.layouts, plan.width            # what every backend puts on its canvases
    ...                                              # run each layout (model/reference.py, vLLM, ...)
    cands = [score_row(ids, logp, layout, vocab, decode_many) for ...]
    best, errors = choose(cands, judge)              # fewest syntax errors, then an empty fill last, then score

The prompt window starts on a coarse grid of line starts, so typing at the cursor keeps its start (and
the prompt's cached K/V, ours or vLLM's) in place. One canvas row, for holes h1, h2 with the text m1
between them and suffix s:

    [ h1 slots ][ m1 tokens, held ][ h2 slots ][ s tokens, held ... ][ <pad>, held ]
      <- S1 ->                       <- S2 ->
    |<------------------------------ bucket length C ---------------------------->|

Hole slots get more room than any fill needs; the model ends a span with <eos>/<pad>. Canvas lengths
come from a few fixed buckets so shapes repeat (a compiled step, a CUDA graph per bucket).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .interface import BadFill, FillRequest, Judge

CHARS_PER_TOKEN = 4  # a rough figure for code: how much text to cut before tokenizing
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


Encode = Callable[[list[str]], list[list[int]]]  # texts -> token ids each ("" -> [])
DecodeMany = Callable[[list[list[int]]], list[str]]  # token id lists -> texts


@dataclass(frozen=True)
class Vocab:
    """The token roles the plan needs."""

    pad: int
    bos: int | None
    ends: frozenset[int]  # tokens that end a hole's span (<eos>, <pad>)
    dropped: frozenset[int]  # never part of a fill's text (<bos>, <mask>)


@dataclass(frozen=True)
class PlanLimits:
    """What a backend's model and the user's settings allow. Every backend builds one from the same
    settings (`maxPromptTokens`, `suffixTokens`), so they cannot drift apart again."""

    canvas_length: int  # the largest canvas: the model's (in-process) or the served one (vLLM)
    max_prompt_tokens: int  # the prompt's tokens, <bos> included
    suffix_tokens: int  # tokens of the suffix held on the canvas at least (at most half the canvas)
    one_length: bool = False  # the checkpoint ends a hole itself: length candidates become one row, the most slots
    max_model_len: int | None = None  # prompt + canvas must fit (a vLLM server's limit)

    @property
    def suffix_min(self) -> int:
        # A small canvas (a 24 GB card's served 64) keeps at most half of itself for the suffix.
        return min(self.suffix_tokens, self.canvas_length // 2)


@dataclass(frozen=True)
class FillPlan:
    """A request's canvases: every candidate row shares the prompt and the canvas width."""

    prompt: tuple[int, ...]  # <bos> + the end of the text before the first hole
    middles: tuple[tuple[int, ...], ...]  # the text between holes, held
    suffix: tuple[int, ...]  # the text after the last hole (its start is held)
    options: tuple[tuple[int, ...], ...]  # per candidate row: slots per hole
    width: int  # the canvas bucket the largest candidate needs
    layouts: tuple[RowLayout, ...]  # per candidate row, laid out at `width`

    def held(self, row: int) -> list[int]:
        """Canvas positions held at their token in a candidate row."""
        return [p for p, h in enumerate(self.layouts[row].hole) if h < 0]


def window_start(prefix: str, max_prompt_tokens: int) -> int:
    """Where the prompt's text starts: the last ~max_prompt_tokens tokens' worth of characters, moved
    forward to a line start on a grid of a quarter of that, so a keystroke keeps it in place."""
    budget = max_prompt_tokens * CHARS_PER_TOKEN
    if len(prefix) <= budget:
        return 0
    grid = budget // 4
    start = math.ceil((len(prefix) - budget) / grid) * grid
    newline = prefix.find("\n", start)
    return newline + 1 if newline != -1 else start


def plan_texts(request: FillRequest, limits: PlanLimits) -> list[str]:
    """The texts a plan tokenizes, in one batch: [the prompt window, each text between holes, the suffix]."""
    text, holes = request.text, request.holes
    prefix = text[: holes[0][0]]
    pieces = [prefix[window_start(prefix, limits.max_prompt_tokens) :]]
    pieces += [text[a[1] : b[0]] for a, b in zip(holes, holes[1:])]
    pieces.append(text[holes[-1][1] :][: CHARS_PER_TOKEN * limits.canvas_length])
    return pieces


def slot_options(request: FillRequest, middles: Sequence[Sequence[int]], suffix_len: int, limits: PlanLimits):
    """The slot counts per hole of each candidate row. Slots never exceed what the canvas holds beside
    the text between holes and some suffix."""
    room = limits.canvas_length - sum(map(len, middles)) - min(suffix_len, limits.suffix_min)
    per_hole = room // len(request.holes)
    if per_hole < 1:
        raise CanvasTooSmall(
            f"the text between the selections needs {sum(map(len, middles))} tokens; "
            f"the canvas holds {limits.canvas_length}"
        )
    if request.length_candidates and limits.one_length:
        return ((min(max(request.length_candidates), per_hole),),)
    if request.length_candidates:
        return tuple((n,) for n in sorted({min(n, per_hole) for n in request.length_candidates}, reverse=True))
    return ((min(request.max_tokens, per_hole),) * len(request.holes),)


def plan_fill(request: FillRequest, encoded: list[list[int]], vocab: Vocab, limits: PlanLimits) -> FillPlan:
    """The plan of a request from its `plan_texts`, tokenized. Raises BadFill (CanvasTooSmall)."""
    prefix_ids, middles, suffix = encoded[0], [list(m) for m in encoded[1:-1]], list(encoded[-1])
    options = slot_options(request, middles, len(suffix), limits)
    width = max(
        bucket_for(needed_length(list(o), middles, suffix, limits.suffix_min), limits.canvas_length) for o in options
    )
    bos = [vocab.bos] if vocab.bos is not None else []
    budget = limits.max_prompt_tokens - len(bos)
    if limits.max_model_len is not None:
        budget = min(budget, limits.max_model_len - width - len(bos))
    if budget < 0:
        raise BadFill(
            f"the model's length ({limits.max_model_len}) leaves no room for a prompt beside a {width}-token canvas"
        )
    prompt = bos + (prefix_ids[-budget:] if budget else [])
    layouts = tuple(lay_out(list(o), middles, suffix, width, vocab.pad) for o in options)
    return FillPlan(
        prompt=tuple(prompt),
        middles=tuple(map(tuple, middles)),
        suffix=tuple(suffix),
        options=options,
        width=width,
        layouts=layouts,
    )


# ---- reading a canvas back ---------------------------------------------------------------------


@dataclass(frozen=True)
class HoleTokens:
    ids: list[int]  # the fill's tokens, up to the hole's first end token, dropped tokens left out
    positions: list[int]  # their canvas positions
    end: int  # the canvas position of the end token, or -1 (the fill ran to the hole's last slot)

    @property
    def scored(self) -> list[int]:
        """The positions a fill's score averages over: its tokens and its end token."""
        return self.positions + ([self.end] if self.end >= 0 else [])


def hole_tokens(row_ids: Sequence[int], layout: RowLayout, h: int, vocab: Vocab) -> HoleTokens:
    ids, positions, end = [], [], -1
    for pos, (tid, hole) in enumerate(zip(row_ids, layout.hole)):
        if hole != h:
            continue
        if tid in vocab.ends:
            end = pos
            break
        if tid not in vocab.dropped:
            ids.append(tid)
            positions.append(pos)
    return HoleTokens(ids, positions, end)


def fills_of(row_ids: Sequence[int], layout: RowLayout, vocab: Vocab, decode_many: DecodeMany) -> tuple[str, ...]:
    """Each hole's text in a canvas row."""
    return tuple(decode_many([hole_tokens(row_ids, layout, h, vocab).ids for h in range(len(layout.slots))]))


@dataclass(frozen=True)
class Candidate:
    """One canvas row's fill, scored."""

    row: int  # the candidate row it was read from
    fills: tuple[str, ...]  # per hole
    score: float  # the mean log-probability of its tokens and end tokens (-inf: none)
    tokens: int  # fill tokens, end tokens excluded


def score_row(
    row: int, row_ids: Sequence[int], logp: Sequence[float], layout: RowLayout, vocab: Vocab, decode_many: DecodeMany
) -> Candidate:
    holes = [hole_tokens(row_ids, layout, h, vocab) for h in range(len(layout.slots))]
    scored = [logp[p] for ht in holes for p in ht.scored]
    return Candidate(
        row=row,
        fills=tuple(decode_many([ht.ids for ht in holes])),
        score=sum(scored) / len(scored) if scored else float("-inf"),
        tokens=sum(len(ht.ids) for ht in holes),
    )


def choose(candidates: Sequence[Candidate], judge: Judge | None) -> tuple[Candidate, int]:
    """(the best candidate, its syntax errors): the fewest syntax errors, then a fill that writes
    something before an empty one (the bundled model often scores "nothing" highest after `return `),
    then the highest score; a tie keeps the earlier candidate. Judged in that order, stopping at the
    first clean fill, which nothing after it beats."""
    if not candidates:
        raise ValueError("choose needs at least one candidate")
    best: tuple[Candidate, int] | None = None
    for c in sorted(candidates, key=lambda c: (not any(c.fills), -c.score)):
        errors = sum(len(b) for b in judge(c.fills)) if judge is not None else 0
        if best is None or errors < best[1]:
            best = (c, errors)
        if errors == 0:
            break
    return best


# ---- positions the syntax puts in question ------------------------------------------------------


def _token_ends(ids: list[int], decode_many: DecodeMany) -> list[int]:
    """The length of the decoded text after each token (decoded together: a character may span tokens)."""
    return [len(t) for t in decode_many([ids[: k + 1] for k in range(len(ids))])]


def positions_to_reopen(
    row_ids: Sequence[int],
    layout: RowLayout,
    verdict: list[list[tuple[int, int]]],
    vocab: Vocab,
    decode_many: DecodeMany,
) -> list[int]:
    """A repair round's positions: from the token holding the first syntax error of the first hole
    that has one to the end of that hole. verdict: per hole, the error ranges within its fill."""
    for h, bad in enumerate(verdict):
        if not bad:
            continue
        first_char = min(a for a, _ in bad)
        ends = _token_ends(hole_tokens(row_ids, layout, h, vocab).ids, decode_many)
        k = next((i for i, end in enumerate(ends) if end > first_char), len(ends))
        return [p for p, hh in enumerate(layout.hole) if hh == h][k:]
    return []


def blamed_positions(
    row_ids: Sequence[int],
    layout: RowLayout,
    verdict: list[list[tuple[int, int]]],
    vocab: Vocab,
    decode_many: DecodeMany,
) -> list[int]:
    """The reference sampler's self-correction: the canvas positions of the tokens the judge blames. A
    zero-width error (a MISSING node) blames the tokens on both sides of it; an error at a fill's end
    (it broke the code after it) also blames the slot that ends the fill, so the fill can grow."""
    blamed: list[int] = []
    for h, bad in enumerate(verdict):
        if not bad:
            continue
        ht = hole_tokens(row_ids, layout, h, vocab)
        ends = _token_ends(ht.ids, decode_many)
        text_len = ends[-1] if ends else 0
        for a, b in bad:
            lo, hi = (a - 1, a + 1) if b <= a else (a, b)
            start = 0
            for p, end in zip(ht.positions, ends):
                if start < hi and end > lo:
                    blamed.append(p)
                start = end
            if b >= text_len:
                after = [
                    p for p, hh in enumerate(layout.hole) if hh == h and (not ht.positions or p > ht.positions[-1])
                ]
                if ht.end >= 0:
                    blamed.append(ht.end)
                elif after:
                    blamed.append(after[0])
    return sorted(set(blamed))
