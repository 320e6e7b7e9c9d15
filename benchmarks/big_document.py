"""What a big document costs the server: memory once open, and the time of a keystroke followed by the
syntax question an editor then asks (a code action at the cursor), over stdio against `canvas-ls serve`
with the scripted backend (no model, so this measures the server).

Two sizes: 1.9 MB (the server keeps the document's tree and re-parses it incrementally) and 7.5 MB
(over the tree budget: each question parses a window around the cursor instead).

    .venv/bin/python benchmarks/big_document.py          # results/big_document.json
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.raw_client import RawClient  # noqa: E402

UNIT = "def f(x):\n    total = 0\n    for v in x:\n        total += v * 2\n    return total\n\n"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(size: int, keystrokes: int = 30) -> dict:
    client = RawClient({"fills": ["1"], "steps": 1})
    client.keep_messages = False
    client.call("initialize", {"processId": None, "rootUri": None, "capabilities": {}})
    client.notify("initialized", {})
    client.call("workspace/executeCommand", {"command": "canvas.status", "arguments": []})
    # Warm every request kind on a small document first, so first-use costs (the syntax thread, the
    # parser, lazily imported modules) are not counted as the big document's.
    warm_uri = "file:///warm.py"
    client.notify(
        "textDocument/didOpen",
        {"textDocument": {"uri": warm_uri, "languageId": "python", "version": 1, "text": UNIT * 20}},
    )
    at = {"line": 2, "character": 8}
    for version in range(2, 6):
        client.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": warm_uri, "version": version},
                "contentChanges": [{"range": {"start": at, "end": at}, "text": "x"}],
            },
        )
        client.call(
            "textDocument/codeAction",
            {"textDocument": {"uri": warm_uri}, "range": {"start": at, "end": at}, "context": {"diagnostics": []}},
        )
    client.notify("textDocument/didClose", {"textDocument": {"uri": warm_uri}})
    client.call("workspace/executeCommand", {"command": "canvas.status", "arguments": []})
    time.sleep(1.0)
    before = rss_mb(client.proc.pid)
    text = UNIT * (size // len(UNIT))
    uri = "file:///big.py"
    client.notify(
        "textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text}}
    )
    line = text.count("\n") // 2 + 1  # inside a function body in the middle of the file
    at = {"line": line, "character": 8}
    first = time.perf_counter()
    client.call(
        "textDocument/codeAction",
        {"textDocument": {"uri": uri}, "range": {"start": at, "end": at}, "context": {"diagnostics": []}},
    )
    first = time.perf_counter() - first
    opened = rss_mb(client.proc.pid)
    keystroke, question = [], []
    for version in range(2, keystrokes + 2):
        t0 = time.perf_counter()
        client.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": uri, "version": version},
                "contentChanges": [{"range": {"start": at, "end": at}, "text": "x"}],
            },
        )
        # The status answer comes after the change was applied: the keystroke's cost on the loop.
        client.call("workspace/executeCommand", {"command": "canvas.status", "arguments": []})
        t1 = time.perf_counter()
        at = {"line": line, "character": at["character"] + 1}
        client.call(
            "textDocument/codeAction",
            {"textDocument": {"uri": uri}, "range": {"start": at, "end": at}, "context": {"diagnostics": []}},
        )
        keystroke.append(t1 - t0)
        question.append(time.perf_counter() - t1)
    after = rss_mb(client.proc.pid)
    status = client.call("workspace/executeCommand", {"command": "canvas.status", "arguments": []})["result"]
    client.call("shutdown")
    client.notify("exit")
    client.proc.wait(30)
    return {
        "document_mb": round(len(text) / 1e6, 2),
        "tree_kept": bool(status["syntaxTrees"]),
        "rss_before_mb": round(before, 1),
        "rss_open_mb": round(opened, 1),
        "rss_after_keystrokes_mb": round(after, 1),
        "server_cost_x_size": round((after - before) / (len(text) / 2**20), 2),
        "first_code_action_ms": round(1000 * first, 1),
        "keystroke_p50_ms": round(1000 * statistics.median(keystroke), 1),
        "code_action_after_keystroke_p50_ms": round(1000 * statistics.median(question), 1),
        "code_action_after_keystroke_p95_ms": round(1000 * sorted(question)[int(0.95 * (len(question) - 1))], 1),
    }


def main() -> int:
    rows = []
    for size in (1_900_000, 7_500_000):
        rows.append(measure(size))
        print(json.dumps(rows[-1]), file=sys.stderr)
    out = ROOT / "benchmarks" / "results" / "big_document.json"
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=1) + "\n")
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
