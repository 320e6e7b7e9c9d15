"""The caches of document text share one byte budget (model/cache_budget.py): least recently used out
across caches, a space's own entry limit, a closed document's entries (and those of no document) gone at
once; the prompt K/V and the syntax checks keep theirs there; and over stdio a closed document leaves no
cache bytes behind, and (glibc) gives its memory back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from canvas_ls.model.cache_budget import CacheBudget, owned_by, shared_budget
from canvas_ls.model.kv import KV_SPACE, PrefixEncoder
from canvas_ls.server.syntax import added_errors, error_spans
from canvas_ls.server.syntax.span import Span

from .raw_client import RawClient


def test_entries_of_every_space_share_the_bytes_least_recently_used_first_out():
    budget = CacheBudget(100)
    dropped = []
    budget.put("a", 1, "one", 40, on_drop=dropped.append)
    budget.put("b", 1, "two", 40)
    assert budget.get("a", 1) == "one"  # now the newest
    budget.put("b", 2, "three", 40)  # 120 > 100: the oldest ("b", 1) goes, whatever its space
    assert budget.get("b", 1) is None and budget.get("a", 1) == "one" and budget.bytes == 80
    assert budget.evicted == 1 and dropped == []
    assert budget.put("c", 1, "huge", 101) is False and budget.get("c", 1) is None  # never kept
    budget.put("a", 1, "one again", 10)  # replaced: no on_drop
    assert budget.bytes == 50 and dropped == []
    budget.resize(20)
    assert budget.get("b", 2) is None and budget.get("a", 1) == "one again"
    budget.put("a", 2, "x", 5, on_drop=dropped.append, max_entries=2)
    budget.put("a", 3, "y", 5, max_entries=2)  # this space's own limit: ("a", 1) goes
    assert budget.get("a", 1) is None and dropped == [] and budget.snapshot()["spaces"] == {"a": 10}
    assert budget.pop("a", 2) == "x" and dropped == []  # taken out, not dropped


def test_forgetting_a_document_drops_its_entries_and_those_of_no_document():
    budget = CacheBudget(1000)
    dropped = []
    with owned_by("file:///a.py"):
        budget.put("trees", "a", "tree of a", 10, on_drop=dropped.append)
        with owned_by("file:///b.py"):
            budget.put("trees", "b", "tree of b", 10)
        budget.put("verdicts", "a", "verdict of a", 10)
    budget.put("verdicts", "window", "a window's verdict", 10)  # no document's
    budget.put(("prompt K/V", 7), "c", "c's K/V", 10, owner="file:///c.py")
    assert budget.snapshot("file:///a.py")["bytes"] == 20
    assert budget.forget("file:///a.py") == 30
    assert dropped == ["tree of a"]
    assert budget.get("trees", "b") == "tree of b" and budget.get(("prompt K/V", 7), "c") == "c's K/V"
    assert budget.snapshot()["spaces"] == {"trees": 10, "prompt K/V": 10}


def test_the_prompt_k_v_of_documents_live_in_the_budget(tiny):
    budget = CacheBudget(10**9)
    enc = PrefixEncoder(tiny.model, max_entries=2, budget=budget)
    ids = [tiny.bos_id] + list(range(10, 150))
    state = enc.encode(ids, key="file:///a.py")
    assert budget.snapshot()["spaces"] == {KV_SPACE: state.nbytes()} and enc.cached("file:///a.py") is state
    enc.encode(ids[:100], key="file:///b.py")
    enc.encode(ids[:90], key="file:///c.py")  # a third document: the least recently used one goes
    assert enc.cached("file:///a.py") is None and enc.cached("file:///c.py") is not None
    assert budget.forget("file:///c.py") > 0 and enc.cached("file:///c.py") is None  # closed: gone
    enc.forget("file:///b.py")
    assert budget.bytes == 0
    small = PrefixEncoder(tiny.model, budget=CacheBudget(state.nbytes() - 1))  # no room for one prompt
    again = small.encode(ids, key="file:///a.py")
    assert small.cached("file:///a.py") is None and small.encode(ids, key="file:///a.py").ids == again.ids
    assert small.last_reused == 0  # nothing kept, so nothing reused: encoded afresh, as a fresh server does
    del enc
    assert budget.bytes == 0


def test_the_syntax_checks_keep_their_results_as_the_documents(monkeypatch):
    budget = CacheBudget(10**8)
    monkeypatch.setattr("canvas_ls.model.cache_budget._shared", budget)
    text = "def f(x):\n    y = \n    return y\n"
    hole = text.index("y = ") + 4
    with owned_by("file:///f.py"):
        added_errors(text, [(Span(hole, hole), "x + 1")], "python")
        error_spans(text + "\n", "python")
    mine = budget.snapshot("file:///f.py")
    assert mine["bytes"] > len(text)
    assert {"python compile results", "syntax errors before a fill"} <= set(mine["spaces"])
    budget.forget("file:///f.py")
    assert budget.bytes == 0


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _status(client: RawClient) -> dict:
    return client.call("workspace/executeCommand", {"command": "canvas.status", "arguments": []})["result"]


def _ask(client: RawClient, uri: str, line: int, character: int) -> None:
    at = {"line": line, "character": character}
    client.call(
        "textDocument/codeAction",
        {"textDocument": {"uri": uri}, "range": {"start": at, "end": at}, "context": {"diagnostics": []}},
    )
    answer = client.call(
        "textDocument/inlineCompletion", {"textDocument": {"uri": uri}, "position": at, "context": {"triggerKind": 1}}
    )
    assert "error" not in answer, answer


def _document(size: int, tag: str) -> tuple[str, int]:
    unit = f"def f_{tag}(x):\n    total = 0\n    for v in x:\n        total += v * 2\n    return total\n\n"
    half = unit * (size // len(unit) // 2)
    head = half + "def mean(values):\n    total = sum(values)\n"
    return head + "    return \n\n" + half, head.count("\n")


def test_a_closed_document_leaves_no_cache_bytes_and_its_memory_goes_back():
    """Over stdio (the scripted backend): a small and a 7 MB document, changed as a whole four times with a
    code action and a completion on each version; closing the big one drops its cache entries (the small
    one's stay) and leaves the server's memory within 20 MB of where it was before it was opened
    (benchmarks/big_document.py has the soak: 7 MB, then ten 5 MB documents)."""
    client = RawClient({"fills": ["total / len(values)"], "steps": 1})
    client.keep_messages = False
    try:
        client.initialize()
        small, line = _document(20_000, "small")
        client.open("file:///small.py", small)
        _ask(client, "file:///small.py", line, 11)
        kept = _status(client)["caches"]
        assert kept["bytes"] > 0
        time.sleep(0.5)
        before = _rss_mb(client.proc.pid)
        big, line = _document(7_000_000, "big")
        client.open("file:///big.py", big)
        _ask(client, "file:///big.py", line, 11)
        for version in range(2, 6):
            client.notify(
                "textDocument/didChange",
                {
                    "textDocument": {"uri": "file:///big.py", "version": version},
                    "contentChanges": [{"text": big.replace("total = 0", f"total = {version}")}],
                },
            )
            _ask(client, "file:///big.py", line, 11)
        assert _status(client)["caches"]["bytes"] > kept["bytes"]
        client.notify("textDocument/didClose", {"textDocument": {"uri": "file:///big.py"}})
        after = _status(client)
        assert after["openDocuments"] == 1 and after["caches"]["spaces"].keys() <= kept["spaces"].keys()
        assert 0 < after["caches"]["bytes"] <= kept["bytes"]  # the small document's entries stay
        time.sleep(0.5)
        grown = _rss_mb(client.proc.pid) - before
        if Path("/proc/self/status").exists():
            assert grown < 20, f"the server kept {grown:.1f} MB after the 7 MB document closed"
        client.call("shutdown")
        client.notify("exit")
        assert client.exit_status() == 0
    finally:
        if client.proc.poll() is None:
            client.proc.kill()


@pytest.fixture(autouse=True)
def _fresh_shared_budget():
    """Tests here that run syntax checks in this process start from an empty shared budget."""
    shared_budget().clear()
    yield
