"""server/repair.py without the LSP or a model: the minimal edits of a repair, the checks of what is
asked before the model is, the backend's say on whether it can repair, and the changes left out
because they add syntax errors. Also the Filler seam's close() as ModelHost uses it."""

from __future__ import annotations

import pytest

from canvas_ls.model.interface import FillerInfo, FillResult
from canvas_ls.server import model_host
from canvas_ls.server.pipeline import BadRequest, Edit
from canvas_ls.server.repair import check_repair_spans, minimal_edits, repair_selections
from canvas_ls.server.settings import ServerSettings

DOC = "def mean(values):\n    totl = sum(values)\n    return totl / len(values)\n"
LINE2 = (DOC.index("    totl"), DOC.index("    return"))


class Repairs:
    """Answers a repair with the selection's text after `replace` (old, new) pairs; records requests."""

    def __init__(self, *replace: tuple[str, str], can_repair: bool = True, backend: str = "fake") -> None:
        self.replace, self.can_repair, self.backend, self.requests = replace, can_repair, backend, []

    def info(self) -> FillerInfo:
        return FillerInfo("m", "/m", "cpu", "none", 32, backend=self.backend, repair=self.can_repair)

    def fill(self, request, on_step=None, cancelled=None) -> FillResult:
        self.requests.append(request)
        fills = []
        for a, b in request.holes:
            text = request.text[a:b]
            for old, new in self.replace:
                text = text.replace(old, new)
            fills.append(text)
        n = len(self.replace)
        return FillResult(tuple(fills), 0.0, 3, n, 0.1, 32, (8,), 1, 0, 0, 1, 0, steps=3, changed_tokens=n)

    def forget(self, document: str) -> None:
        pass

    def close(self) -> None:
        pass


def _apply(text: str, edits) -> str:
    for e in sorted(edits, key=lambda e: e.start, reverse=True):
        text = text[: e.start] + e.text + text[e.end :]
    return text


def test_minimal_edits_rewrite_only_the_changed_words():
    old, new = "total = sum(values) / len(values)", "total = sum(items) / len(values)"
    assert minimal_edits(old, new) == [(12, 18, "items")]
    assert minimal_edits(old, old) == []
    edits = minimal_edits("a = b + c", "a = (b + c) * 2")
    assert edits == [(4, 4, "("), (9, 9, ") * 2")]  # insertions only: `b + c` is not rewritten
    applied = "a = b + c"
    for s, e, text in reversed(edits):
        applied = applied[:s] + text + applied[e:]
    assert applied == "a = (b + c) * 2"


@pytest.mark.parametrize(
    "spans, reason",
    [
        ([], "select the code to repair"),
        ([(5, 5)], "select the code to repair"),
        ([(0, 10), (5, 12)], "the ranges to repair overlap"),
        ([(0, 10_000)], "is outside the document"),
    ],
)
def test_what_cannot_be_repaired_is_refused_before_the_model_is_asked(spans, reason):
    filler = Repairs(("totl", "total"))
    with pytest.raises(BadRequest, match=reason):
        check_repair_spans(DOC, spans, ServerSettings())
    with pytest.raises(BadRequest, match=reason):
        repair_selections(filler, DOC, spans, "python", ServerSettings())
    assert filler.requests == []


def test_the_backend_says_whether_it_can_repair():
    filler = Repairs(("totl", "total"), can_repair=False, backend="vllm http://x")
    with pytest.raises(BadRequest, match="the vllm http://x backend cannot"):
        repair_selections(filler, DOC, [LINE2], "python", ServerSettings())
    assert filler.requests == []


def test_repair_edits_only_the_selection_with_the_threshold_setting():
    filler = Repairs(("totl", "total"))
    outcome = repair_selections(filler, DOC, [LINE2], "python", ServerSettings(repairThreshold=0.3))
    assert outcome.mode == "repair" and outcome.note == ""
    # line 3's `totl` is outside the selection: it stays, although the model would rename it too
    assert outcome.edits == (Edit(LINE2[0] + 4, LINE2[0] + 8, "total"),)
    assert _apply(DOC, outcome.edits) == DOC.replace("    totl =", "    total =")
    [request] = filler.requests
    assert request.holes == (LINE2,) and request.repair_threshold == 0.3


def test_a_change_that_adds_a_syntax_error_is_left_out_and_said():
    filler = Repairs(("sum(values)", "sum(values"), ("totl", "total"))
    outcome = repair_selections(filler, DOC, [LINE2], "python", ServerSettings())
    assert _apply(DOC, outcome.edits) == DOC.replace("    totl =", "    total =")  # the `)` stays
    assert outcome.note == "1 change(s) left out: they would add syntax errors"
    # plain text: no syntax checks, every change is kept
    plain = repair_selections(filler, DOC, [LINE2], None, ServerSettings())
    assert _apply(DOC, plain.edits) == DOC.replace("    totl = sum(values)", "    total = sum(values")


def test_nothing_changed_is_nothing_to_repair():
    outcome = repair_selections(Repairs(), DOC, [LINE2], "python", ServerSettings())
    assert outcome.edits == () and outcome.note == "nothing to repair"


def test_model_host_closes_the_backend_it_replaces(monkeypatch):
    closed = []

    class Closing(Repairs):
        def close(self) -> None:
            closed.append(self)

    made = []
    monkeypatch.setattr(model_host, "load_in_process", lambda settings: made.append(Closing()) or made[-1])
    host = model_host.ModelHost()
    first = host.get(ServerSettings(seed=1, modelPath="/a"))
    assert host.get(ServerSettings(seed=2, modelPath="/a")) is first and closed == []  # same model key
    second = host.get(ServerSettings(modelPath="/b"))
    assert second is not first and closed == [first]
