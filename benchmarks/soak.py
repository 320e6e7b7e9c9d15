"""A simulated day of editing against `canvas-ls serve`, over stdio: memory stays flat, every request
is answered exactly once, and the exit status is what the spec says.

The server runs with the scripted backend (tests/scripted_server.py: known fills, no model), so this
measures the server: documents, syntax trees, the protocol layer, jobs and progress. The load, mixed
over 50 documents in six languages: didOpen/didChange (incremental edits)/didClose, inline completions,
$/cancelRequest of some of them, code actions (as VS Code sends on every cursor move), a few command
fills, malformed messages (invalid params, unknown methods, broken JSON) and a few documents over the
size limit.

    .venv/bin/python benchmarks/soak.py                      # 100,000 messages
    .venv/bin/python benchmarks/soak.py --messages 20000     # quicker

Writes results/soak.json and results/soak.png (RSS and latency over time).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests/raw_client.py and the scripted server are test support

from tests.raw_client import RawClient  # noqa: E402

SOURCES = {
    "python": (
        "py",
        "def f{i}(values):\n    total = 0\n    for v in values:\n        total += v\n    return total\n\n",
    ),
    "javascript": (
        "js",
        "function f{i}(xs) {{\n  let t = 0;\n  for (const x of xs) {{ t += x; }}\n  return t;\n}}\n\n",
    ),
    "typescript": ("ts", "function f{i}(xs: number[]): number {{\n  return xs.reduce((a, b) => a + b, 0);\n}}\n\n"),
    "go": (
        "go",
        "func f{i}(xs []int) int {{\n\tt := 0\n\tfor _, x := range xs {{\n\t\tt += x\n\t}}\n\treturn t\n}}\n\n",
    ),
    "rust": ("rs", "fn f{i}(xs: &[i64]) -> i64 {{\n    xs.iter().sum()\n}}\n\n"),
    "lua": (
        "lua",
        "local function f{i}(xs)\n  local t = 0\n  for _, x in ipairs(xs) do t = t + x end\n  return t\nend\n\n",
    ),
}
LIMIT = 2_000_000  # maxDocumentBytes for the run: a few documents go over it


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Doc:
    def __init__(self, uri: str, lang: str, text: str) -> None:
        self.uri, self.lang, self.text, self.version = uri, lang, text, 1

    def lines(self) -> list[str]:
        return self.text.split("\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--docs", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=20.0, help="stop sending after this long")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "soak.json")
    args = ap.parse_args()
    rng = random.Random(args.seed)

    client = RawClient({"fills": ["x + 1"], "steps": 2})
    client.keep_messages = False
    client.call(
        "initialize",
        {
            "processId": None,
            "rootUri": None,
            "capabilities": {"window": {"workDoneProgress": True}},
            "initializationOptions": {"maxDocumentBytes": LIMIT},
        },
    )
    client.notify("initialized", {})
    sent = 0
    kinds: dict[int, tuple[str, float, int]] = {}  # request id -> (kind, sent at, message index)

    def request(kind: str, method: str, params) -> int:
        nonlocal sent
        msg_id = client.request(method, params)
        kinds[msg_id] = (kind, time.perf_counter(), sent)
        sent += 1
        return msg_id

    def notify(method: str, params) -> None:
        nonlocal sent
        client.notify(method, params)
        sent += 1

    docs: list[Doc] = []
    langs = list(SOURCES)
    for i in range(args.docs):
        lang = langs[i % len(langs)]
        ext, unit = SOURCES[lang]
        docs.append(
            Doc(f"file:///soak/doc{i}.{ext}", lang, "".join(unit.format(i=k) for k in range(40 + 20 * (i % 5))))
        )
    big = [
        Doc(f"file:///soak/big{i}.py", "python", SOURCES["python"][1].format(i=0) * (LIMIT // 90 + 1000))
        for i in range(3)
    ]
    for d in docs + big:
        notify(
            "textDocument/didOpen", {"textDocument": {"uri": d.uri, "languageId": d.lang, "version": 1, "text": d.text}}
        )

    samples = []  # (messages sent, RSS MB, seconds)
    t0 = time.perf_counter()
    deadline = t0 + 60 * args.minutes
    next_sample = 0
    while sent < args.messages and time.perf_counter() < deadline:
        if sent >= next_sample:
            samples.append((sent, rss_mb(client.proc.pid), time.perf_counter() - t0))
            print(f"[{sent:,}/{args.messages:,}] RSS {samples[-1][1]:.1f} MB", file=sys.stderr)
            next_sample += 5000
        d = rng.choice(docs)
        lines = d.lines()
        line = rng.randrange(len(lines))
        col = rng.randint(0, len(lines[line]))
        roll = rng.random()
        pos = {"line": line, "character": col}
        if roll < 0.80:  # typing: insert a character, or delete the one before the cursor
            d.version += 1
            if col > 0 and rng.random() < 0.5:
                change = {"range": {"start": {"line": line, "character": col - 1}, "end": pos}, "text": ""}
                lines[line] = lines[line][: col - 1] + lines[line][col:]
            else:
                ch = rng.choice("abcxyz_ (),:=1")
                change = {"range": {"start": pos, "end": pos}, "text": ch}
                lines[line] = lines[line][:col] + ch + lines[line][col:]
            d.text = "\n".join(lines)
            notify(
                "textDocument/didChange",
                {"textDocument": {"uri": d.uri, "version": d.version}, "contentChanges": [change]},
            )
        elif roll < 0.88:
            msg_id = request(
                "inline",
                "textDocument/inlineCompletion",
                {"textDocument": {"uri": d.uri}, "position": pos, "context": {"triggerKind": 2}},
            )
            if rng.random() < 0.3:
                notify("$/cancelRequest", {"id": msg_id})
        elif roll < 0.97:
            request(
                "codeAction",
                "textDocument/codeAction",
                {"textDocument": {"uri": d.uri}, "range": {"start": pos, "end": pos}, "context": {"diagnostics": []}},
            )
        elif roll < 0.975:
            request(
                "command",
                "workspace/executeCommand",
                {"command": "canvas.fillSelection", "arguments": [d.uri, {"start": pos, "end": pos}]},
            )
        elif roll < 0.98:
            b = rng.choice(big)
            request(
                "bigDocument",
                "textDocument/inlineCompletion",
                {
                    "textDocument": {"uri": b.uri},
                    "position": {"line": 1, "character": 4},
                    "context": {"triggerKind": 2},
                },
            )
        elif roll < 0.985:  # malformed: invalid params, an unknown method, broken JSON
            what = rng.randrange(3)
            if what == 0:
                request(
                    "invalid",
                    "textDocument/inlineCompletion",
                    {
                        "textDocument": {"uri": d.uri},
                        "position": {"line": -1, "character": 0},
                        "context": {"triggerKind": 2},
                    },
                )
            elif what == 1:
                request("unknown", "canvas/noSuchMethod", {})
            else:
                client.send_raw(b'{"jsonrpc": "2.0", "id": ')
                sent += 1
        elif roll < 0.99:  # close a document and open it again
            notify("textDocument/didClose", {"textDocument": {"uri": d.uri}})
            d.version = 1
            notify(
                "textDocument/didOpen",
                {"textDocument": {"uri": d.uri, "languageId": d.lang, "version": 1, "text": d.text}},
            )
        else:
            request("status", "workspace/executeCommand", {"command": "canvas.status", "arguments": []})
        if sent % 500 == 0:  # let the server breathe like an editor would, and bound the backlog
            client.answer(
                request("status", "workspace/executeCommand", {"command": "canvas.status", "arguments": []}),
                timeout=120,
            )
    elapsed = time.perf_counter() - t0

    # Every request answered exactly once.
    wait_until = time.perf_counter() + 120
    while time.perf_counter() < wait_until and any(i not in client.arrived for i in kinds):
        time.sleep(0.2)
    samples.append((sent, rss_mb(client.proc.pid), time.perf_counter() - t0))
    unanswered = [i for i in kinds if i not in client.arrived]
    twice = [i for i, (_, n) in client.arrived.items() if n > 1]
    status = client.call("workspace/executeCommand", {"command": "canvas.status", "arguments": []}).get("result", {})
    shutdown = client.call("shutdown")
    client.notify("exit")
    exit_status = client.proc.wait(30)

    latency: dict[str, list[tuple[int, float]]] = {}
    for msg_id, (kind, at, index) in kinds.items():
        if msg_id in client.arrived:
            latency.setdefault(kind, []).append((index, client.arrived[msg_id][0] - at))
    table = {}
    for kind, rows in sorted(latency.items()):
        ms = sorted(1000 * s for _, s in rows)
        table[kind] = {
            "n": len(ms),
            "p50_ms": round(statistics.median(ms), 2),
            "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2),
        }
    warm = next((rss for n, rss, _ in samples if n >= 10_000), samples[-1][1])
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "messages": sent,
        "seconds": round(elapsed, 1),
        "documents": args.docs,
        "rss_mb": [(n, round(r, 1)) for n, r, _ in samples],
        "rss_after_warmup_mb": round(warm, 1),
        "rss_final_mb": round(samples[-1][1], 1),
        "rss_growth_after_warmup_mb": round(max(r for _, r, _ in samples) - warm, 1),
        "requests": len(kinds),
        "unanswered": len(unanswered),
        "answered_twice": len(twice),
        "latency": table,
        "status_at_end": status,
        "shutdown_answered": "result" in shutdown,
        "exit_status": exit_status,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")

    import matplotlib  # the `bench` extra, slow to import: only to draw the plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.plot([n for n, _, _ in samples], [r for _, r, _ in samples], marker="o")
    a1.axhline(warm + 50, color="red", linestyle=":", label="after warm-up + 50 MB")
    a1.set(xlabel="messages sent", ylabel="server RSS (MB)", title="memory over a day of editing")
    a1.legend()
    for kind, rows in sorted(latency.items()):
        if len(rows) < 20:
            continue
        rows.sort()
        step = max(1, len(rows) // 20)
        chunks = [rows[i : i + step] for i in range(0, len(rows), step)]
        a2.plot([c[0][0] for c in chunks], [1000 * statistics.median(s for _, s in c) for c in chunks], label=kind)
    a2.set(xlabel="messages sent", ylabel="p50 latency (ms)", yscale="log", title="latency by request kind")
    a2.legend(fontsize=7)
    fig.savefig(args.out.with_suffix(".png"), dpi=110, bbox_inches="tight")
    print(json.dumps({k: v for k, v in result.items() if k != "rss_mb"}, indent=1))
    ok = not unanswered and not twice and exit_status == 0 and result["rss_growth_after_warmup_mb"] <= 50
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
