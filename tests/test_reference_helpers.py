"""The helpers reference_denoise's loop calls (model/reference.py): syntax self-correction and the step history."""

from __future__ import annotations

import torch

from canvas_ls.model.canvas import CanvasBatch
from canvas_ls.model.reference import BAR_STEPS, Corrections, History


def _batch() -> CanvasBatch:
    held = torch.tensor([[False, False, True], [False, False, True]])
    return CanvasBatch(ids=torch.tensor([[0, 0, 7], [0, 0, 7]]), held=held, hole=torch.where(held, -1, 0))


def test_corrections_ask_once_per_fill_bar_for_bar_steps_and_take_back_stops():
    asked = []

    def correct(row, fill):
        asked.append((row, fill.tolist()))
        return 2, [1]

    fixes = Corrections(correct, max_corrections=2, steps=8, batch=_batch())
    argmax = torch.tensor([[3, 4, 9], [5, 6, 9]])
    # Step 8 of 8 (first half): asked only about a row that would stop; it keeps denoising.
    assert fixes.ask(8, argmax, [True, True], torch.tensor([False, True])) == [1]
    assert asked == [(1, [5, 6, 7])]  # the fill with held tokens in place
    assert fixes.eligible(None).tolist() == [[True, True, True], [True, False, True]]
    for _ in range(BAR_STEPS):
        fixes.tick()
    assert fixes.eligible(None) is None  # no bar left
    # Second half: every row still denoising is asked, never twice about the same fill.
    assert fixes.ask(4, argmax, [True, False], torch.tensor([False, False])) == []
    assert fixes.ask(3, argmax, [True, True], torch.tensor([False, False])) == []
    assert asked == [(1, [5, 6, 7]), (0, [3, 4, 7])]
    # The last step takes no stop back; a row out of corrections is not asked.
    assert fixes.ask(1, argmax + 1, [True, True], torch.tensor([True, True])) == []
    assert asked[2:] == [(0, [4, 5, 7]), (1, [6, 7, 7])]
    assert fixes.corrections == [2, 2] and fixes.errors_found == [4, 4]
    assert fixes.ask(1, argmax + 2, [True, True], torch.tensor([True, True])) == [] and len(asked) == 4


def test_corrections_without_max_corrections_never_ask():
    fixes = Corrections(lambda r, fill: (1, [0]), max_corrections=0, steps=4, batch=_batch())
    assert fixes.ask(1, torch.zeros(2, 3, dtype=torch.long), [True, True], torch.tensor([True, True])) == []
    free = ~_batch().held
    assert fixes.eligible(free) is free


def test_history_keeps_the_steps_before_the_last():
    batch = _batch()
    history = History(2, batch, ~batch.held)
    for step in range(5):
        history.add(torch.full((2, 3), step), torch.zeros(2, 3), [True, step < 3])
    kept = history.before_last()
    assert [h[0].tolist() for h in kept] == [[[2, 2, 7], [2, 2, 7]], [[3, 3, 7], [3, 3, 7]]]
    assert [h[2] for h in kept] == [[True, True], [True, False]]
    assert History(0, batch, None).before_last() == []
