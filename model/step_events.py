"""What a caller sees of a denoising step: the batch's `CanvasStep` as one request's `StepEvent`
(counts over its rows, the canvas of its first row with still-open slots drawn as OPEN_SLOT)."""

from __future__ import annotations

from .canvas import CanvasStep, Row
from .interface import OPEN_SLOT, StepEvent
from .plan import RowLayout, Vocab
from .text import TokenText


def render_holes(text: TokenText, layout: RowLayout, ids: list[int], open_: list[bool]) -> tuple[str, ...]:
    """Each hole's slots at this step: committed tokens as text, open positions as OPEN_SLOT."""
    vocab: Vocab = text.vocab
    texts = []
    for h in range(len(layout.slots)):
        pieces, run = [], []
        for pos, hole in enumerate(layout.hole):
            if hole != h:
                continue
            tid = ids[pos]
            if open_[pos]:
                pieces.append(text.decode(run))
                run = []
                pieces.append(OPEN_SLOT)
            elif tid not in vocab.ends and tid not in vocab.dropped:
                run.append(tid)  # decode runs together: a character may span byte-level tokens
        pieces.append(text.decode(run))
        texts.append("".join(pieces))
    return tuple(texts)


def step_event(text: TokenText, request: int, rows: list[Row], step: CanvasStep, ids, open_) -> StepEvent:
    """Request `request`'s view of a step: counts over its rows, the canvas of its first row, and the
    round of its row that is furthest into repair. ids, open_: the step's (B, C) canvas as lists."""
    mine = [k for k, r in enumerate(rows) if r.request == request]
    committed = sum(1 for k in mine for pos, h in enumerate(rows[k].layout.hole) if h >= 0 and not open_[k][pos])
    slots = sum(sum(rows[k].layout.slots) for k in mine)
    k = max(mine, key=lambda k: (step.repairs[k], step.active[k]))
    done_round = not step.active[k] and step.repairs[k] > 0
    shown = step.round_steps[k] if done_round else min(max(step.round_step[k], 1), step.round_steps[k])
    return StepEvent(
        step=step.step,
        round_step=shown,
        round_steps=step.round_steps[k],
        repair=step.repairs[k],
        committed=committed,
        slots=slots,
        texts=render_holes(text, rows[mine[0]].layout, ids[mine[0]], open_[mine[0]]),
    )
