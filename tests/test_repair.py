"""The repair (model/repair.py) on the tiny random-weight model: the selected code is the canvas, the
tokens below the threshold (or blamed by the syntax judge) are re-noised and denoised, the rest is held."""

from __future__ import annotations

import pytest
import torch

from canvas_ls.model.infill import Infiller
from canvas_ls.model.interface import OPEN_SLOT, FillRequest
from canvas_ls.model.repair import (
    Text,
    blamed_positions,
    blamed_tokens,
    denoise_held,
    lay_out_selection,
    low_confidence,
    make_step_fn,
    splice,
    strip_holes,
    token_bounds,
    token_probabilities,
)
from canvas_ls.model.settings import SamplerSettings
from canvas_ls.server.pipeline import make_judge

DOC = """import math


def bucket_for(needed: int, max_length: int) -> int:
    for b in BUCKETS:
        if needed <= b <= max_length:
            return b
    if needed <= max_length:
        return max_length
    raise ValueError(needed)


def norm(xs):
    return math.sqrt(sum(x * x for x in xs))
"""
FUNC = (DOC.index("def bucket_for"), DOC.index("\n\n\ndef norm") + 1)  # the whole first function
NORM = (DOC.index("    return math"), len(DOC))


@pytest.fixture(scope="module")
def infiller(tiny):
    return Infiller(tiny, make_judge=make_judge)


def _request(holes, threshold, sampler="reference", language="python", text=DOC):
    return FillRequest(
        text=text,
        holes=holes,
        language=language,
        repair_threshold=threshold,
        settings=SamplerSettings(sampler=sampler, max_steps=8),
    )


def _renoised(infiller, request):
    """The canvas, and which positions the scoring pass (and judge) re-noise, as repair_fill decides."""
    tx = Text(infiller)
    canvas = lay_out_selection(infiller, tx, request)
    state = infiller.prefix.encode(infiller.prompt_ids(request.text[: request.holes[0][0]]))
    probs = token_probabilities(make_step_fn(infiller, state, canvas.width, canvas.hole >= 0), canvas.ids)
    renoise = low_confidence(probs, canvas.hole >= 0, request.repair_threshold)
    return tx, canvas, state, probs, renoise


@pytest.mark.parametrize("sampler", ["reference", "commit"])
def test_held_tokens_never_change(infiller, sampler):
    request = _request((FUNC, NORM), 0.3, sampler)
    tx, canvas, state, probs, renoise = _renoised(infiller, request)
    assert 0 < int(renoise.sum()) < int((canvas.hole >= 0).sum())  # some tokens re-noised, not all
    settings = request.settings.resolved(infiller.loaded.generation, infiller.loaded.default_sampler)
    judge = make_judge(*strip_holes(request.text, request.holes), "python")
    out = denoise_held(infiller, tx, canvas, renoise, state, settings, judge, None, None)
    held = ~renoise
    assert torch.equal(out.ids[held], canvas.ids[held])  # selection tokens above the threshold, suffix, padding
    assert out.ids.shape == canvas.ids.shape

    # The text: outside the re-noised tokens' characters, each hole's text is the selection's own.
    result = infiller.fill(request)
    assert result.tokens == int(renoise.sum()) and result.sampler == sampler
    for h, ((a, b), slots, fill) in enumerate(zip(request.holes, canvas.slots, result.fills)):
        marked = [k for k, p in enumerate(slots) if renoise[0, p]]
        if not marked:
            assert fill == DOC[a:b]
            continue
        bounds = token_bounds(tx.decode, canvas.tokens[h])
        first, last = bounds[marked[0]], bounds[marked[-1] + 1]
        original = DOC[a:b]
        assert fill.startswith(original[:first]) and fill.endswith(original[last:])


def test_threshold_zero_changes_nothing(infiller):
    events = []
    result = infiller.fill(_request((FUNC,), 0.0), on_step=events.append)
    assert result.fills == (DOC[FUNC[0] : FUNC[1]],)
    assert (result.tokens, result.changed_tokens, result.forward_passes, result.syntax_errors) == (0, 0, 1, 0)
    assert events == []  # nothing re-noised: no denoising, no steps
    plain = infiller.fill(_request((NORM,), 0.0, language=None))
    assert plain.fills == (DOC[NORM[0] :],) and plain.tokens == 0


@pytest.mark.parametrize("sampler", ["reference", "commit"])
def test_threshold_one_renoises_every_token(infiller, sampler):
    request = _request((FUNC,), 1.0, sampler)
    n = len(Text(infiller).encode(DOC[FUNC[0] : FUNC[1]]))
    events = []
    result = infiller.fill(request, on_step=events.append)
    assert result.tokens == n and result.slots == (n,)
    assert result.changed_tokens > 0 and result.forward_passes == len(events)  # the scoring pass + one per step
    assert set(events[0].texts[0]) == {OPEN_SLOT}  # before denoising: every token is an open slot
    assert events[0].slots == n and events[0].committed == 0
    assert events[-1].committed == n and OPEN_SLOT not in events[-1].texts[0]  # converged


def test_the_same_request_repairs_the_same_way(infiller):
    a, b = infiller.fill(_request((FUNC,), 0.3)), infiller.fill(_request((FUNC,), 0.3))
    assert (a.fills, a.changed_tokens, a.tokens) == (b.fills, b.changed_tokens, b.tokens)


def test_the_judge_blames_the_broken_tokens(infiller):
    broken = DOC.replace("if needed <= max_length:", "if needed <= max_length::")
    start = broken.index("def bucket_for")
    hole = (start, broken.index("\n\n\ndef norm") + 1)
    request = _request((hole,), 0.0, text=broken)
    tx = Text(infiller)
    canvas = lay_out_selection(infiller, tx, request)
    judge = make_judge(*strip_holes(broken, request.holes), "python")
    found, positions = blamed_positions(tx, judge, canvas, canvas.ids[0].tolist())
    assert found >= 1 and positions
    slots = canvas.slots[0]
    bounds = token_bounds(tx.decode, canvas.tokens[0])
    colons = broken[hole[0] : hole[1]].index("::")
    blamed_chars = [(bounds[slots.index(p)], bounds[slots.index(p) + 1]) for p in positions]
    assert any(a <= colons + 1 < b or a <= colons < b for a, b in blamed_chars)
    result = infiller.fill(request)  # threshold 0: only the blamed tokens are re-noised
    assert result.tokens == len(positions) and result.errors_found >= 1


def test_text_helpers(infiller):
    tx = Text(infiller)
    text = "total = 0\nfor v in values:\n"
    ids = tx.encode(text)
    bounds = token_bounds(tx.decode, ids)
    assert bounds[0] == 0 and bounds[-1] == len(text) and all(b is not None for b in bounds)
    assert splice(tx.decode, ids, list(ids), tx.drop, text) == text
    # A changed token replaces exactly its own characters; an end token deletes it.
    k = next(i for i in range(len(ids)) if tx.decode([ids[i]]).strip() == "=")
    new = list(ids)
    new[k] = tx.encode(":")[0]
    assert splice(tx.decode, ids, new, tx.drop, text) == text[: bounds[k]] + ":" + text[bounds[k + 1] :]
    new[k] = infiller.loaded.eos_id
    assert splice(tx.decode, ids, new, tx.drop, text) == text[: bounds[k]] + text[bounds[k + 1] :]
    # zero-width error: the tokens on both sides; an error at the end: the last token
    assert blamed_tokens([0, 3, 6, 9], [(3, 3)]) == [0, 1]
    assert blamed_tokens([0, 3, 6, 9], [(8, 9)]) == [2]
    assert blamed_tokens([0, 3, 6, 9], [(9, 9)]) == [2]
    assert strip_holes("abcdefgh", ((1, 3), (5, 6))) == ("adegh", ((1, 1), (3, 3)))
