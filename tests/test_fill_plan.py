"""The fill plan (model/plan.py): written once for every backend, torch-free. Its rules on a character
"tokenizer" (one token per character), so each expectation can be worked out by hand; the backends'
agreement on real requests is tested in tests/test_vllm.py (against a real vLLM) and here (in-process vs
the shared engine's Infiller, which is the same class)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from canvas_ls.model.interface import FillRequest
from canvas_ls.model.plan import (
    Candidate,
    CanvasTooSmall,
    PlanLimits,
    Vocab,
    blamed_positions,
    choose,
    plan_fill,
    plan_texts,
    positions_to_reopen,
    score_row,
    window_start,
)

PAD, EOS, BOS = 0, 1, 2
VOCAB = Vocab(pad=PAD, bos=BOS, ends=frozenset({PAD, EOS}), dropped=frozenset({BOS}))


def encode(texts: list[str]) -> list[list[int]]:
    return [[ord(c) for c in t] for t in texts]


def decode_many(seqs: list[list[int]]) -> list[str]:
    return ["".join(chr(i) for i in s) for s in seqs]


def plan(request: FillRequest, limits: PlanLimits):
    return plan_fill(request, encode(plan_texts(request, limits)), VOCAB, limits)


def test_the_plan_is_torch_free():
    out = subprocess.run(
        [sys.executable, "-c", "import sys, canvas_ls.model.plan; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"


def test_the_prompt_window_keeps_its_start_while_the_user_types():
    prefix = "".join(f"line {i}\n" for i in range(200))
    start = window_start(prefix, 100)
    assert 0 < start and prefix[start - 1] == "\n"  # a line start
    assert len(prefix) - start <= 100 * 4
    for typed in ("x", "xy", "xyz = 1"):
        assert window_start(prefix + typed, 100) == start  # a keystroke keeps it (and the cached K/V) in place
    assert window_start("short", 100) == 0


def test_the_prompt_is_bos_and_the_last_tokens_within_the_budget():
    text = "a" * 30 + "b" * 10 + "|" + "tail"
    hole = text.index("|")
    p = plan(FillRequest(text, holes=((hole, hole + 1),), max_tokens=4), PlanLimits(64, 11, 8))
    assert p.prompt == (BOS,) + tuple(ord("b") for _ in range(10))  # 11 tokens, <bos> included


def test_slots_candidates_share_the_largest_bucket_and_hold_the_suffix_start():
    text = "x = |" + "0123456789" * 3
    hole = text.index("|")
    req = FillRequest(text, holes=((hole, hole + 1),), max_tokens=24, length_candidates=(24, 8))
    p = plan(req, PlanLimits(64, 100, 8))
    assert p.options == ((24,), (8,)) and p.width == 32  # 24 slots + 8 suffix tokens: one 32 bucket for both
    for layout, slots in zip(p.layouts, (24, 8)):
        assert layout.hole[:slots] == (0,) * slots and all(h == -1 for h in layout.hole[slots:])
        assert layout.ids[slots : slots + 8] == tuple(ord(c) for c in "01234567")  # the suffix, held
    assert p.held(1) == list(range(8, 32))
    # A checkpoint that ends holes itself: one row, the most slots.
    assert plan(req, PlanLimits(64, 100, 8, one_length=True)).options == ((24,),)


def test_the_suffix_held_is_at_most_half_a_small_canvas():
    assert PlanLimits(canvas_length=32, max_prompt_tokens=64, suffix_tokens=32).suffix_min == 16
    assert PlanLimits(canvas_length=256, max_prompt_tokens=64, suffix_tokens=8).suffix_min == 8


def test_text_between_holes_that_fills_the_canvas_is_refused():
    text = "a" + "m" * 40 + "b"
    with pytest.raises(CanvasTooSmall, match="between the selections"):
        plan(FillRequest(text, holes=((0, 1), (41, 42)), max_tokens=4), PlanLimits(32, 100, 8))


def test_a_served_model_length_leaves_room_for_the_canvas():
    text = "p" * 100 + "|"
    req = FillRequest(text, holes=((100, 101),), max_tokens=8)
    p = plan(req, PlanLimits(32, 1000, 8, max_model_len=40))
    assert len(p.prompt) == 40 - p.width


def _candidate(row, text, score):
    return Candidate(row=row, fills=(text,), score=score, tokens=len(text))


def test_choose_fewest_errors_then_something_before_nothing_then_score():
    clean = lambda fills: [[]]  # noqa: E731
    cands = [_candidate(0, "", -0.1), _candidate(1, "a", -2.0), _candidate(2, "b", -1.0)]
    assert choose(cands, clean)[0].fills == ("b",)
    broken_b = lambda fills: [[(0, 1)]] if fills[0] == "b" else [[]]  # noqa: E731
    best, errors = choose(cands, broken_b)
    assert best.fills == ("a",) and errors == 0
    all_broken = lambda fills: [[(0, 1)]] if fills[0] else [[]]  # noqa: E731
    assert choose(cands, all_broken) == (cands[0], 0)  # nothing beats a fill that breaks the code
    assert choose(cands, None)[0].fills == ("b",)


def test_score_reads_a_hole_up_to_its_end_token():
    req = FillRequest("x = |;", holes=((4, 5),), max_tokens=6)
    p = plan(req, PlanLimits(16, 100, 8))
    ids = [ord("a"), ord("b"), EOS, ord("z"), ord("z"), ord("z")] + list(p.layouts[0].ids[6:])
    logp = [-1.0, -3.0, -2.0] + [-9.0] * (len(ids) - 3)
    c = score_row(0, ids, logp, p.layouts[0], VOCAB, decode_many)
    assert c.fills == ("ab",) and c.tokens == 2 and c.score == pytest.approx(-2.0)  # a, b and the end token


def test_repair_positions_start_at_the_token_holding_the_first_error():
    req = FillRequest("|", holes=((0, 1),), max_tokens=6)
    p = plan(req, PlanLimits(16, 100, 8))
    layout = p.layouts[0]
    ids = [ord(c) for c in "ab(cd"] + [EOS] + list(layout.ids[6:])
    assert positions_to_reopen(ids, layout, [[(2, 3)]], VOCAB, decode_many) == [2, 3, 4, 5]  # "(" to the hole's end
    assert positions_to_reopen(ids, layout, [[]], VOCAB, decode_many) == []
    # The reference sampler's correction blames the tokens under the error; at the fill's end, its end slot too.
    assert blamed_positions(ids, layout, [[(2, 3)]], VOCAB, decode_many) == [2]
    assert blamed_positions(ids, layout, [[(4, 5)]], VOCAB, decode_many) == [4, 5]
    assert blamed_positions(ids, layout, [[(3, 3)]], VOCAB, decode_many) == [2, 3]  # zero width: both sides
