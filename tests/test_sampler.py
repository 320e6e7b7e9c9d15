"""Sampler invariants on a tiny real DiffusionGemma (random weights)."""

from __future__ import annotations

import pytest
import torch

from canvas_ls.model.canvas import CanvasBatch, NoiseSpec
from canvas_ls.model.infill import Infiller
from canvas_ls.model.interface import OPEN_SLOT, FillCancelled, FillRequest
from canvas_ls.model.reference import make_generators
from canvas_ls.model.sampler import close_ended_holes, denoise, noise_like, select_confidence, select_entropy_bound
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
        denoise(
            step_fn,
            _batch(tiny),
            SamplerSettings(max_steps=50, entropy_bound=1e-9),
            _noise(tiny),
            make_generators([0], torch.device("cpu")),
            cancelled=lambda: len(calls) >= 3,
        )
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
    settings = SamplerSettings(sampler="commit", max_steps=16, repair_rounds=2)
    req = FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=8, settings=settings, language="python")
    r = inf.fill(req, on_step=events.append)
    assert len(calls) >= 1
    if r.tokens:  # a fill that never became empty was re-noised twice, then kept
        assert r.repairs == 2 and r.syntax_errors == 1
    assert [e.repair for e in events] == sorted(e.repair for e in events) and events[-1].repair == r.repairs
    assert all(1 <= e.round_step <= e.round_steps for e in events)
    assert {e.round_steps for e in events if e.repair} <= {
        req.settings.max_steps // 2
    }  # repair rounds: half the budget
    assert r.errors_found == r.repairs  # each repair round was asked for by one error (the judge blames one per fill)
    assert r.sampler == "commit" and r.steps == r.forward_passes
    assert (
        Infiller(tiny)
        .fill(FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=8, settings=settings, language="python"))
        .repairs
        == 0
    )  # no judge


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


def _greedy(inf, ids: list[int], steps: int, first_allowed=None) -> list[int]:
    """Greedy decoding by re-running the encoder on the whole sequence each time (no cache reuse)."""
    from transformers.cache_utils import DynamicCache

    model, out = inf.loaded.model, []
    with torch.no_grad():
        for _ in range(steps):
            cache = DynamicCache(config=model.config)
            h = model.model.encoder(
                input_ids=torch.tensor([ids + out]), past_key_values=cache, use_cache=True
            ).last_hidden_state
            logits = model.lm_head(h[:, -1])
            logits = torch.tanh(logits / 30.0) * 30.0
            if first_allowed is not None and not out:
                logits = logits.masked_fill(~first_allowed, float("-inf"))
            tok = int(logits.argmax(-1))
            if tok in inf.text.vocab.ends | inf.text.vocab.dropped:
                break
            out.append(tok)
    return out


def test_left_to_right_baseline_matches_a_plain_greedy_loop(tiny):
    """The AR baseline equals greedy decoding by re-running the encoder on the whole sequence each time,
    from the prompt less its healed last token (a prefix ending in a word: nothing special about it)."""
    inf = Infiller(tiny)
    hole = TEXT.index("return") + len("return")
    r = inf.draft.fill(FillRequest(TEXT, holes=((hole, hole),), max_tokens=6))
    assert r.forward_passes == r.tokens or r.forward_passes == r.tokens + 1  # one token per pass
    ids = inf.prompt_ids(TEXT[:hole])
    healed = inf.text.decode(ids[-1:])
    allowed = torch.tensor([inf.text.decode([i]).startswith(healed) for i in range(tiny.vocab_size)])
    allowed[list(inf.text.vocab.ends | inf.text.vocab.dropped)] = False
    assert inf.text.decode(_greedy(inf, ids[:-1], 6, allowed))[len(healed) :] == r.fills[0]


def test_left_to_right_heals_a_prompt_ending_in_a_space(tiny):
    """ "return " ends in a lone space token: the draft takes it back and its first token must start with
    a space, so the fill is what follows the cursor and never rewrites text before it."""
    inf = Infiller(tiny)
    ids = inf.prompt_ids(TEXT[:HOLE])
    assert inf.text.decode(ids[-1:]) == " "  # the case healing is for
    prompt, healed, allowed = inf.draft.heal(ids)
    assert prompt == ids[:-1] and healed == " "
    texts = [inf.text.decode([i]) for i in range(tiny.vocab_size)]
    assert all(texts[i].startswith(" ") for i in allowed.nonzero().flatten().tolist())
    assert not allowed[list(inf.text.vocab.ends | inf.text.vocab.dropped)].any()
    r = inf.draft.fill(FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=6))
    assert r.fills[0] == inf.text.decode(_greedy(inf, prompt, 6, allowed))[1:]
    # nothing to heal when only <bos> would be left
    assert inf.draft.heal(ids[:2]) == (ids[:2], "", None)
    # nor when the last token is part of a character (byte-level pieces of a non-ASCII one)
    split = [c for c in "éü中文😀🎉" if "\ufffd" in inf.text.decode(inf.prompt_ids("x = '" + c)[-1:])]
    assert split, "the tiny tokenizer splits some character into byte pieces"
    partial = inf.prompt_ids("x = '" + split[0])
    assert inf.draft.heal(partial) == (partial, "", None)
    inf.draft.fill(FillRequest("x = '" + split[0] + "\n", holes=((6, 6),), max_tokens=4))  # no error
    # tokenHealing false: the prompt ends at the cursor, a plain greedy continuation
    off = FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=6, settings=SamplerSettings(token_healing=False))
    assert inf.draft.fill(off).fills[0] == inf.text.decode(_greedy(inf, ids, 6))


# ---- the reference sampler through the Infiller ------------------------------------------------------

REF = SamplerSettings(sampler="reference", max_steps=8)


def test_auto_is_the_checkpoint_default_and_the_result_says_which_ran(tiny):
    assert tiny.default_sampler == "reference"  # canvas_ls.json "sampler" of the tiny model
    inf = Infiller(tiny)
    auto = inf.fill(FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=8, settings=SamplerSettings(max_steps=8)))
    ref = inf.fill(FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=8, settings=REF))
    commit = inf.fill(
        FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=8, settings=SamplerSettings(sampler="commit", max_steps=8))
    )
    assert auto.sampler == ref.sampler == "reference" and commit.sampler == "commit"
    assert auto.fills == ref.fills
    assert ref.forward_passes == ref.steps == 8  # random weights never meet the published stopping thresholds


def test_reference_holds_tokens_and_zeroes_their_self_conditioning(tiny):
    """Held positions (the suffix start, padding) keep their token as input on every step and in the
    output, and get a zero self-conditioning signal (vLLM's diffusion_pinned); hole slots get a real one."""
    inf = Infiller(tiny)
    module = tiny.model.model.decoder.self_conditioning
    inputs, signals = [], []
    handle_in = tiny.model.model.decoder.embed_tokens.register_forward_pre_hook(  # the canvas going in
        lambda mod, args: inputs.append(args[0].clone())
    )
    handle_sc = module.register_forward_hook(lambda mod, args, out: signals.append(args[1].clone()))
    try:
        r = inf.fill(FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=8, settings=REF))
    finally:
        handle_in.remove()
        handle_sc.remove()
    assert r.forward_passes == len(inputs) == len(signals) == 8
    suffix = inf.text.encode(TEXT[HOLE:])
    for canvas in inputs:
        assert canvas[0, 8 : 8 + len(suffix)].tolist() == suffix  # the held suffix start, every step
    for sc in signals[1:]:
        assert sc[0, 8:].abs().max() == 0 and sc[0, :8].abs().amax(-1).min() > 0
    assert not tiny.model.model.decoder.self_conditioning._forward_pre_hooks  # zeroed in the step, no hook


def test_reference_batch_equals_the_same_requests_one_by_one(tiny64):
    inf = Infiller(tiny64)
    reqs = [
        FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=16, settings=REF),
        FillRequest("x = 1\ny = ", holes=((10, 10),), max_tokens=16, settings=REF),
        FillRequest(TEXT, holes=((4, 7), (HOLE, HOLE)), max_tokens=8, settings=REF),
    ]
    batched = inf.fill_batch(reqs)
    for req, got in zip(reqs, batched):
        assert inf.fill(req).fills == got.fills


def test_reference_early_stop_ends_a_confident_row():
    """A model sure of every slot: the argmax is stable and the mean entropy ~0 after two steps, so the
    canvas stops at step 2 of 48 (stability 1 needs one repeat); held tokens stay in the output."""
    from canvas_ls.model.reference import ReferenceParams, reference_denoise

    noise = NoiseSpec("uniform", 50, None, pad_id=0, end_ids=(0, 1), banned_ids=())
    ids = torch.tensor([[0] * 6 + [10, 11]])
    hole = torch.tensor([[0] * 6 + [-1, -1]])
    batch = CanvasBatch(ids=ids, held=hole < 0, hole=hole)

    def step_fn(canvas, sc):
        logits = torch.zeros(1, 8, 50)
        logits[0, :, 7] = 40.0
        return logits

    params = ReferenceParams.from_settings(SamplerSettings(sampler="reference").resolved())
    out = reference_denoise(step_fn, batch, params, noise, make_generators([0], torch.device("cpu")))
    assert out.forward_passes == 2 and out.steps == [2] and out.stopped_early == [True]
    assert out.ids.tolist() == [[7] * 6 + [10, 11]]


def test_self_correction_bars_blamed_positions_while_denoising_and_is_bounded(tiny):
    """The judge blames the first token of every non-empty fill: during denoising (not after the row
    finishes) that slot is barred, so it is re-noised on the next steps, at most repair_rounds times."""
    calls = []

    def judge(fills):
        calls.append(fills)
        return [[(0, 1)] if f else [] for f in fills]

    inf = Infiller(tiny, make_judge=lambda text, holes, language: judge)
    events = []
    settings = SamplerSettings(sampler="reference", max_steps=12, repair_rounds=2)
    r = inf.fill(
        FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=8, settings=settings, language="python"),
        on_step=events.append,
    )
    assert r.sampler == "reference" and r.forward_passes == 12  # corrections cost no extra passes
    assert 1 <= r.repairs <= 2 and r.errors_found == r.repairs
    corrected = [e.step for e in events if e.repair > (events[e.step - 2].repair if e.step > 1 else 0)]
    assert corrected and all(step < 12 for step in corrected[:1])  # while denoising, before the last step
    assert all(e.step > 12 // 2 for e in events if e.repair)  # only in the second half of the schedule
    first = corrected[0]
    assert events[first - 1].texts[0].startswith(OPEN_SLOT)  # the blamed first slot was re-noised
    if first < 12:
        assert events[first].texts[0].startswith(OPEN_SLOT)  # ... and stays barred on the next step


def test_end_tokens_close_holes_only_where_the_checkpoint_says_so(tiny):
    """With end_closes_hole the reference sampler runs one row with the most slots (the model picks
    the length); without it, the length candidates run as one batch, as the commit loop does."""
    from dataclasses import replace

    req = FillRequest(TEXT, holes=((HOLE, HOLE),), length_candidates=(8, 16), settings=REF)
    assert Infiller(tiny).fill(req).candidates == 2
    closing = Infiller(replace(tiny, end_closes_hole=True)).fill(req)
    assert closing.candidates == 1 and closing.slots == (16,)
    commit = replace(req, settings=SamplerSettings(sampler="commit", max_steps=8))
    assert Infiller(replace(tiny, end_closes_hole=True)).fill(commit).candidates == 2


@pytest.mark.parametrize("delay", [0.0, 0.5])
def test_min_fill_tokens_bars_the_end_tokens_from_a_holes_first_slots(tiny64, delay):
    """min_fill_tokens: the hole's first slots never hold <eos>/<pad>, so the fill has at least that many
    tokens; end_delay only delays the end tokens: the same bound holds."""
    from dataclasses import replace

    inf = Infiller(tiny64)
    settings = SamplerSettings(sampler="reference", min_fill_tokens=12, end_delay=delay, max_steps=6)
    r = inf.fill(FillRequest(TEXT, holes=((HOLE, HOLE),), max_tokens=16, settings=settings))
    assert r.tokens >= 12
    plain = inf.fill(
        FillRequest(
            TEXT, holes=((HOLE, HOLE),), max_tokens=16, settings=replace(settings, min_fill_tokens=0, end_delay=0.0)
        )
    )
    assert plain.fills  # the old behaviour stays reachable (min_fill_tokens 0)
