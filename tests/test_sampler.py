"""Sampler invariants on a tiny real DiffusionGemma (random weights)."""

from __future__ import annotations

import pytest
import torch

from canvas_ls.model.infill import Infiller
from canvas_ls.model.interface import OPEN_SLOT, FillCancelled, FillRequest
from canvas_ls.model.sampler import (
    CanvasBatch,
    NoiseSpec,
    close_ended_holes,
    denoise,
    make_generators,
    noise_like,
    select_confidence,
    select_entropy_bound,
)
from canvas_ls.model.settings import SamplerSettings

TEXT = "def add(a, b):\n    return \n\nprint(add(1, 2))\n"
HOLE = TEXT.index("return ") + len("return ")


def test_entropy_bound_takes_lowest_entropies_within_the_bound():
    ent = torch.tensor([[0.5, 0.01, 0.02, 3.0, 0.03]])
    open_ = torch.ones_like(ent, dtype=torch.bool)
    # sorted 0.01, 0.02, 0.03, 0.5: cumsum - current = 0, 0.01, 0.03, 0.06 -> all four within 0.1
    assert select_entropy_bound(ent, open_, 0.1).tolist() == [[True, True, True, False, True]]
    assert select_entropy_bound(ent, open_, 0.005).tolist() == [[False, True, False, False, False]]
    # closed positions are never chosen, and at least one open position always is
    open_[0, 1] = False
    assert select_entropy_bound(ent, open_, 1e-9).tolist() == [[False, False, True, False, False]]


def test_confidence_threshold_takes_at_least_the_most_confident():
    p = torch.tensor([[0.95, 0.5, 0.91, 0.2]])
    open_ = torch.tensor([[True, True, False, True]])
    assert select_confidence(p, open_, 0.9).tolist() == [[True, False, False, False]]
    assert select_confidence(p, open_, 0.99).tolist() == [[True, False, False, False]]
    open_[0, 0] = False
    assert select_confidence(p, open_, 0.99).tolist() == [[False, True, False, False]]


def test_an_end_token_closes_the_rest_of_its_hole_only():
    noise = NoiseSpec("uniform", 100, None, pad_id=0, end_ids=(0, 1), banned_ids=())
    ids = torch.tensor([[5, 1, 7, 7, 9, 9, 5, 6, 7]])
    hole = torch.tensor([[0, 0, 0, 0, -1, -1, 1, 1, 1]])
    committed = torch.tensor([[True, True, False, False, True, True, False, False, False]])
    closed = close_ended_holes(ids, committed, hole, noise)
    assert closed.tolist() == [[False, False, True, True, False, False, False, False, False]]


def _batch(tiny, n=12):
    ids = torch.tensor([[0] * n + [10, 11, 12, 13]])
    hole = torch.tensor([[0] * n + [-1] * 4])
    return CanvasBatch(ids=ids, held=hole < 0, hole=hole)


def _noise(tiny):
    return Infiller(tiny).noise


def test_held_tokens_never_change_on_any_step(tiny):
    batch = _batch(tiny)
    seen = []

    def step_fn(canvas, sc):
        seen.append(canvas.clone())
        return torch.randn(canvas.shape[0], canvas.shape[1], tiny.vocab_size)

    denoise(step_fn, batch, SamplerSettings(max_steps=8), _noise(tiny), make_generators([0], torch.device("cpu")))
    assert len(seen) >= 2
    for canvas in seen:
        assert canvas[0, 12:].tolist() == [10, 11, 12, 13]


def test_a_cancelled_fill_stops_within_one_step(tiny):
    calls = []

    def step_fn(canvas, sc):
        calls.append(1)
        return torch.randn(canvas.shape[0], canvas.shape[1], tiny.vocab_size)

    with pytest.raises(FillCancelled):
        denoise(step_fn, _batch(tiny), SamplerSettings(max_steps=50, entropy_bound=1e-9), _noise(tiny),
                make_generators([0], torch.device("cpu")), cancelled=lambda: len(calls) >= 3)
    assert len(calls) == 3


def test_same_seed_same_fill_and_other_seed_differs(tiny):
    inf = Infiller(tiny)
    req = FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=16, settings=SamplerSettings(seed=7))
    a, b = inf.fill(req), inf.fill(req)
    c = inf.fill(FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=16, settings=SamplerSettings(seed=8)))
    assert a.fills == b.fills
    assert a.fills != c.fills


def test_a_batch_equals_the_same_requests_one_by_one(tiny64):
    inf = Infiller(tiny64)
    reqs = [
        FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=16),
        FillRequest("x = 1\ny = ", holes=((10, 10),), max_tokens=16),  # shorter prompt: left padding
        FillRequest(TEXT, holes=((4, 7), (HOLE, HOLE)), max_tokens=8),  # two holes
    ]
    batched = inf.fill_batch(reqs)
    for req, got in zip(reqs, batched):
        assert inf.fill(req).fills == got.fills


def test_model_ends_the_span_and_fills_stop_at_the_end_token(tiny):
    """A model sure of <eos> at slot 3 ends the hole there: later slots become padding at once, so the
    fill is 3 tokens long and the loop does not spend steps on the rest."""
    noise = _noise(tiny)
    eos, word = noise.end_ids[0], 100

    def step_fn(canvas, sc):
        logits = torch.zeros((canvas.shape[0], canvas.shape[1], tiny.vocab_size))  # unsure everywhere ...
        logits[:, :3, word] = 30.0  # ... but sure of three words
        logits[:, 3, eos] = 30.0  # and of the end right after them
        return logits

    settings = SamplerSettings(max_steps=8, acceptance="confidence")
    out = denoise(step_fn, _batch(tiny), settings, noise, make_generators([0], torch.device("cpu")))
    assert out.ids[0, :3].tolist() == [word] * 3
    assert out.ids[0, 3].item() == eos
    assert out.ids[0, 4:12].tolist() == [noise.pad_id] * 8
    assert out.forward_passes == 1  # the unsure slots after the end were closed, not denoised


def test_length_candidates_run_as_one_batch_and_pick_one(tiny):
    inf = Infiller(tiny)
    r = inf.fill(FillRequest(TEXT, holes=((HOLE, HOLE),), length_candidates=(8, 16, 32)))
    assert r.candidates == 3
    assert r.slots[0] in (8, 16, 32)


def test_absorbing_noise_uses_the_mask_and_never_emits_it(tiny_absorbing):
    inf = Infiller(tiny_absorbing)
    assert inf.noise.kind == "absorbing" and inf.noise.mask_id == 3
    events = []
    r = inf.fill(FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=16), on_step=events.append)
    assert events and OPEN_SLOT in events[0].texts[0]  # still-open slots are drawn, never as text
    assert all("<mask>" not in e.texts[0] for e in events)
    assert "<mask>" not in r.fills[0]
    canvas = torch.zeros(1, 8, dtype=torch.long)
    assert noise_like(canvas, inf.noise, make_generators([0], torch.device("cpu")), [8]).tolist() == [[3] * 8]


def test_repair_reopens_from_the_first_error_and_is_bounded(tiny):
    calls = []

    def judge(fills):
        calls.append(fills)
        return [[(0, 1)] if f else [] for f in fills]  # every non-empty fill "has an error" at its start

    inf = Infiller(tiny, make_judge=lambda text, holes, language: judge)
    events = []
    req = FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=8, settings=SamplerSettings(repair_rounds=2), language="python")
    r = inf.fill(req, on_step=events.append)
    assert len(calls) >= 1
    if r.tokens:  # a fill that never became empty was re-noised twice, then kept
        assert r.repairs == 2 and r.syntax_errors == 1
    assert [e.repair for e in events] == sorted(e.repair for e in events) and events[-1].repair == r.repairs
    assert all(1 <= e.round_step <= e.round_steps for e in events)
    assert {e.round_steps for e in events if e.repair} <= {req.settings.max_steps // 2}  # repair rounds: half the budget
    assert Infiller(tiny).fill(FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=8, language="python")).repairs == 0  # no judge


def test_prefix_cache_is_reused_across_requests_of_one_document(tiny64):
    inf = Infiller(tiny64)
    inf.prefix.chunk = 4  # TEXT's prompt is shorter than one default chunk
    text1 = TEXT
    text2 = TEXT[:HOLE] + "a" + TEXT[HOLE:]
    r1 = inf.fill(FillRequest(text1, holes=((HOLE, HOLE),), max_tokens=8, document="doc"))
    r2 = inf.fill(FillRequest(text2, holes=((HOLE + 1, HOLE + 1),), max_tokens=8, document="doc"))
    assert r1.reused_prompt_tokens == 0
    assert r2.reused_prompt_tokens > 0
    fresh = Infiller(tiny64).fill(FillRequest(text2, holes=((HOLE + 1, HOLE + 1),), max_tokens=8))
    assert fresh.fills == r2.fills  # a reused cache gives the same fill as a fresh one


def test_left_to_right_baseline_matches_a_plain_greedy_loop(tiny):
    """The AR baseline equals greedy decoding by re-running the encoder on the whole sequence each time."""
    from transformers.cache_utils import DynamicCache

    inf = Infiller(tiny)
    r = inf.fill_autoregressive(FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=6))
    assert r.forward_passes == r.tokens or r.forward_passes == r.tokens + 1  # one token per pass
    ids = inf.prompt_ids(TEXT[:HOLE])
    model, out = tiny.model, []
    with torch.no_grad():
        for _ in range(6):
            cache = DynamicCache(config=model.config)
            h = model.model.encoder(input_ids=torch.tensor([ids + out]), past_key_values=cache, use_cache=True).last_hidden_state
            logits = model.lm_head(h[:, -1])
            logits = torch.tanh(logits / 30.0) * 30.0
            tok = int(logits.argmax(-1))
            if tok in inf._end | inf._special:
                break
            out.append(tok)
    assert r.fills[0] == inf._decode(out)
