"""What a big document costs the server: memory once open, and the time of a keystroke followed by the
syntax question an editor then asks (a code action at the cursor), over stdio against `canvas-ls serve`
with the scripted backend (no model, so this measures the server).

Two sizes: 1.9 MB (the server keeps the document's tree and re-parses it incrementally) and 7.5 MB
(over the tree budget: each question parses a window around the cursor instead).

Then a soak of big documents, each opened, changed, asked about and closed, with the server's RSS after
each close (what a closed document leaves behind) and the bytes its caches hold (canvas.status):

  * a 7 MB document changed four times as a whole, a code action and a completion on every version;
  * ten different 5 MB documents in turn, each changed as a whole once and by 20 keystrokes, a code
    action and a completion after each change.

    .venv/bin/python benchmarks/big_document.py                 # results/big_document.json
    .venv/bin/python benchmarks/big_document.py --soak-only     # the soak alone
    .venv/bin/python benchmarks/big_document.py --soak-only --real   # the soak against the real model
"""

from __future__ import annotations

import argparse
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


HOLE_LINE = "    return "  # a single-line completion's place (code before the cursor, none after it)


def soak_document(size: int, tag: str) -> tuple[str, int]:
    """(a Python document of about `size` characters, the line of its hole), its text unique to `tag`:
    caches keyed by text never share an entry between two such documents."""
    unit = UNIT.replace("def f(", f"def f_{tag}_(")
    half = unit * (size // len(unit) // 2)
    head = half + f"def mean_{tag}(values):\n    total = sum(values)\n"
    return head + HOLE_LINE + "\n\n" + half, head.count("\n")


class Soak:
    """One server, documents opened, changed, asked about and closed in turn; RSS after each close."""

    def __init__(self, real: bool, settings: dict | None = None) -> None:
        command = [sys.executable, "-m", "canvas_ls.server.cli", "serve"] if real else None
        self.client = RawClient({"fills": ["total / len(values)"], "steps": 1}, command=command)
        self.client.keep_messages = False
        self.client.call(
            "initialize",
            {"processId": None, "rootUri": None, "capabilities": {}, "initializationOptions": settings or {}},
        )
        self.client.notify("initialized", {})
        self.rows: list[dict] = []
        self.before = 0.0

    def status(self) -> dict:
        return self.client.call("workspace/executeCommand", {"command": "canvas.status", "arguments": []})["result"]

    def wait_warm(self, timeout: float = 600) -> None:
        """Until the model is loaded and warmed up (the real backend), so its own growth is not counted."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if status.get("error"):
                raise RuntimeError(status["error"])
            if status.get("model") and not status.get("warmingUp"):
                return
            time.sleep(0.5)
        raise TimeoutError("the model did not finish its warm-up")

    def ask(self, uri: str, line: int) -> None:
        """A code action and an inline completion at the hole."""
        at = {"line": line, "character": len(HOLE_LINE)}
        self.client.call(
            "textDocument/codeAction",
            {"textDocument": {"uri": uri}, "range": {"start": at, "end": at}, "context": {"diagnostics": []}},
        )
        answer = self.client.answer(
            self.client.request(
                "textDocument/inlineCompletion",
                {"textDocument": {"uri": uri}, "position": at, "context": {"triggerKind": 1}},
            ),
            timeout=300,
        )
        if "error" in answer:
            raise RuntimeError(answer["error"])

    def document(self, uri: str, texts: list[str], line: int, keystrokes: int = 0) -> dict:
        """Open texts[0], change it as a whole to each later text, then type `keystrokes` characters at the
        hole, asking after each version; close. Returns the RSS (MB) open at its largest and after closing."""
        client, pid = self.client, self.client.proc.pid
        client.notify(
            "textDocument/didOpen",
            {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": texts[0]}},
        )
        self.ask(uri, line)
        largest = rss_mb(pid)
        version = 1
        for text in texts[1:]:
            version += 1
            client.notify(
                "textDocument/didChange",
                {"textDocument": {"uri": uri, "version": version}, "contentChanges": [{"text": text}]},
            )
            self.ask(uri, line)
            largest = max(largest, rss_mb(pid))
        for k in range(keystrokes):
            version += 1
            here = {"line": line, "character": len(HOLE_LINE) + k}
            client.notify(
                "textDocument/didChange",
                {
                    "textDocument": {"uri": uri, "version": version},
                    "contentChanges": [{"range": {"start": here, "end": here}, "text": "x"}],
                },
            )
            if k % 5 == 4:
                self.ask(uri, line)
                largest = max(largest, rss_mb(pid))
        client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
        status = self.status()  # answered after the close was handled
        time.sleep(0.5)
        return {
            "rss_open_max_mb": round(largest, 1),
            "rss_after_close_mb": round(rss_mb(pid), 1),
            "cache_bytes_after_close": (status.get("caches") or {}).get("bytes"),
        }

    def close(self) -> None:
        self.client.call("shutdown")
        self.client.notify("exit")
        self.client.proc.wait(30)


def soak(real: bool = False, settings: dict | None = None, series: int = 10) -> dict:
    """The soak of big documents (see the module docstring), in one server."""
    run = Soak(real, settings)
    try:
        if real:
            run.wait_warm()
        # Every request kind once on a small document first: first-use costs are not the big documents'.
        small, line = soak_document(20_000, "warm")
        run.document("file:///warm.py", [small, small.replace("total", "totals")], line, keystrokes=5)
        time.sleep(1.0)
        before = rss_mb(run.client.proc.pid)
        text, line = soak_document(7_000_000, "whole")
        versions = [text] + [text.replace("total = 0", f"total = {v}") for v in range(1, 5)]
        whole = {"document_mb": round(len(text) / 1e6, 2), **run.document("file:///whole.py", versions, line)}
        del text, versions
        whole["left_mb"] = round(whole["rss_after_close_mb"] - before, 1)
        series_rows = []
        for i in range(series):
            text, line = soak_document(5_000_000, f"d{i}")
            row = run.document(f"file:///series{i}.py", [text, text.replace("total = 0", "total = 1")], line, 20)
            row["left_mb"] = round(row["rss_after_close_mb"] - before, 1)
            series_rows.append(row)
            print(json.dumps({"series": i, **row}), file=sys.stderr)
        status = run.status()
    finally:
        run.close()
    return {
        "backend": "in-process model" if real else "scripted (no model)",
        "model": status.get("model"),
        "rss_before_mb": round(before, 1),
        "whole_7mb": whole,
        "series_5mb": series_rows,
        "series_left_mb_max": max(r["left_mb"] for r in series_rows),
        "caches": status.get("caches"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--soak-only", action="store_true", help="only the soak of big documents")
    parser.add_argument("--real", action="store_true", help="the soak against the real model (in process)")
    parser.add_argument("--settings", default="{}", help="server settings for the soak (JSON)")
    parser.add_argument("--no-save", action="store_true", help="print, do not write results/big_document.json")
    args = parser.parse_args()
    rows = []
    if not args.soak_only:
        for size in (1_900_000, 7_500_000):
            rows.append(measure(size))
            print(json.dumps(rows[-1]), file=sys.stderr)
    soaked = soak(args.real, json.loads(args.settings))
    print(json.dumps(soaked, indent=1))
    if not args.no_save:
        out = ROOT / "benchmarks" / "results" / "big_document.json"
        old = json.loads(out.read_text()) if out.exists() else {}
        result = {"date": time.strftime("%Y-%m-%d"), "rows": rows or old.get("rows", [])}
        result["soak"] = {**old.get("soak", {}), ("real" if args.real else "scripted"): soaked}
        out.write_text(json.dumps(result, indent=1) + "\n")
    if rows:
        print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
