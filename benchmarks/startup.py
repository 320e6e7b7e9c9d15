"""How long canvas-ls takes to start: the import of the language server, and `canvas-ls serve` from
spawn to its answer to `initialize` (what an editor waits for), then to the first inline completion;
`canvas-ls fill` end to end; and, in the same server, the end of its background warm-up (the compiled
step and the measured costs in use), then repeated completions on the open document (an editor's steady
state: each one after typing a character at the cursor, as lsp_eval drives a server).

    .venv/bin/python benchmarks/startup.py                      # this checkout
    .venv/bin/python benchmarks/startup.py --python OTHER/bin/python --label before   # another install
    .venv/bin/python benchmarks/startup.py --model benchmarks/results/tmp/small-model --repeat 30 \
        --settings '{"threads": 1}' --label "small, new defaults"

Each figure is the median of --reps fresh processes (the repeated completions: of all of them);
results are appended to results/startup.json.

--back-to-back: a server sent HumanEval single-line completions back to back from its start (each
request as soon as the last is answered, cycling through 30 spread tasks, each its own open document),
so its warm-up never sees a quiet second; when the warm-up ends (canvas.status), 30 more. Reports when
the warm-up ended and the completions' p50 before its stages start (the eager step alone), while they
run, and after it (results/startup.json, label "... back to back").

    .venv/bin/python benchmarks/startup.py --back-to-back
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lsprotocol import types as t

from canvas_ls.server.client import inline_params, open_doc, start, stop

ROOT = Path(__file__).resolve().parent.parent
DOC = "def mean(values):\n    total = sum(values)\n    return \n"
TYPED = "total / len(values)"  # typed at the cursor, one character per repeated completion


def import_seconds(python: str) -> tuple[float, bool]:
    code = "import time, sys; t0 = time.perf_counter(); import canvas_ls.server.lsp; print(time.perf_counter() - t0, 'torch' in sys.modules)"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), out[1] == "True"


async def warmed_seconds(client, t0: float, timeout: float = 600.0) -> float | None:
    """Spawn to the end of the server's background warm-up (canvas.status warmingUp false), polled
    quietly: the warm-up waits for a pause in fills, so this asks for none. None: no warm-up reported."""
    while time.perf_counter() - t0 < timeout:
        status = await client.workspace_execute_command_async(t.ExecuteCommandParams(command="canvas.status"))
        if not status.get("warmingUp"):
            return time.perf_counter() - t0 if status.get("warmingUp") is not None else None
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the server still warms up after {timeout:.0f} s")


async def serve_seconds(
    python: str, model: str, settings: dict, repeat: int = 0
) -> tuple[float, float, float | None, list[float]]:
    """(spawn to initialize, spawn to the first completion, spawn to the end of the warm-up (when
    `repeat`), each repeated completion's seconds: the steady state, after the warm-up)."""
    t0 = time.perf_counter()
    client = await start(
        {**settings, **({"modelPath": model} if model else {})},
        log_level=None,
        command=[python, "-m", "canvas_ls.server.cli", "serve"],
    )
    initialized = time.perf_counter() - t0
    repeated = []
    try:
        uri = open_doc(client, DOC)
        await client.text_document_inline_completion_async(inline_params(uri, 2, 11))
        first = time.perf_counter() - t0
        warmed = await warmed_seconds(client, t0) if repeat else None
        for i in range(repeat):  # type one more character at the cursor, then ask again
            typed = TYPED[: i % (len(TYPED) + 1)]
            client.text_document_did_change(
                t.DidChangeTextDocumentParams(
                    text_document=t.VersionedTextDocumentIdentifier(uri=uri, version=i + 2),
                    content_changes=[
                        t.TextDocumentContentChangeWholeDocument(
                            text=DOC.replace("return \n", "return " + typed + "\n")
                        )
                    ],
                )
            )
            s = time.perf_counter()
            await client.text_document_inline_completion_async(inline_params(uri, 2, 11 + len(typed)))
            repeated.append(time.perf_counter() - s)
    finally:
        await stop(client)
    return initialized, first, warmed, repeated


HUMANEVAL_SINGLE = (
    ROOT.parent / "shared" / "benchmarks" / "human-eval-infilling" / "HumanEval-SingleLineInfilling.jsonl.gz"
)


def spread_tasks(path: Path, n: int = 30) -> list[dict]:
    """n tasks spread evenly over the file (as infill_eval.py --limit picks them)."""
    import gzip

    with gzip.open(path, "rt") as f:
        tasks = [json.loads(line) for line in f]
    return [tasks[int(i * len(tasks) / n)] for i in range(n)]


async def back_to_back(python: str, model: str, settings: dict, data: Path, after: int = 30) -> dict:
    """Completions back to back from the server's start until its warm-up ends, then `after` more."""
    tasks = spread_tasks(data)
    t0 = time.perf_counter()
    client = await start(
        {**settings, **({"modelPath": model} if model else {})},
        log_level=None,
        command=[python, "-m", "canvas_ls.server.cli", "serve"],
    )
    docs = []
    for k, task in enumerate(tasks):
        prefix = task["prompt"]
        uri = open_doc(client, prefix + task["suffix"], uri=f"file:///tmp/humaneval_{k}.py")
        docs.append((uri, prefix.count("\n"), len(prefix) - (prefix.rfind("\n") + 1)))
    fills: list[tuple[float, float, bool]] = []  # (started, seconds, warming up when answered)
    loaded = warmed = None
    status: dict = {}
    try:
        k = 0
        while warmed is None or sum(1 for f in fills if f[0] >= warmed) < after:
            uri, line, col = docs[k % len(docs)]
            k += 1
            s = time.perf_counter()
            await client.text_document_inline_completion_async(inline_params(uri, line, col))
            done = time.perf_counter()
            status = await client.workspace_execute_command_async(t.ExecuteCommandParams(command="canvas.status"))
            if loaded is None:
                loaded = done - t0  # the first answer: the model is loaded (it waited for the load)
            fills.append((s - t0, done - s, bool(status.get("warmingUp"))))
            if warmed is None and status.get("warmingUp") is False:
                warmed = time.perf_counter() - t0
            if time.perf_counter() - t0 > 900:
                raise TimeoutError("the warm-up did not end within 15 minutes of completions back to back")
    finally:
        await stop(client)
    first_stage = loaded + 10.0  # model/warm_up.py WARM_UP_PATIENCE_S after loading: stages may start
    groups = {
        "eager_alone": [d for s, d, w in fills[1:] if w and s + d < first_stage],
        "beside_warm_up": [d for s, d, w in fills[1:] if w and s + d >= first_stage],
        "after_warm_up": [d for s, d, w in fills if not w and s >= warmed],
    }
    return {
        "first_answer_s": round(loaded, 2),
        "warmed_up_s": round(warmed, 2),
        "warm_up_after_load_s": round(warmed - loaded, 2),
        "compile": status.get("compile"),
        **{
            name: {"n": len(ds), "p50_s": round(statistics.median(ds), 3) if ds else None}
            for name, ds in groups.items()
        },
    }


def fill_seconds(python: str, model: str, settings: dict) -> float:
    """`canvas-ls fill FILE --at L:C --json`, spawn to exit."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(DOC)
    args = [python, "-m", "canvas_ls.server.cli", "fill", f.name, "--at", "3:12", "--json"]
    if model:
        args += ["--model", model]
    for name, value in settings.items():
        args += ["--set", f"{name}={value if isinstance(value, str) else json.dumps(value)}"]
    t0 = time.perf_counter()
    subprocess.run(args, capture_output=True, text=True, check=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=sys.executable, help="the interpreter of the install to measure")
    ap.add_argument("--label", default="this checkout")
    ap.add_argument("--model", default="", help="modelPath (default: the server's own default)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=0, help="completions after the first, in the same server (each rep)")
    ap.add_argument("--settings", default="{}", help="JSON initializationOptions for the server")
    ap.add_argument("--no-fill", action="store_true", help="skip `canvas-ls fill` end to end")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "startup.json")
    ap.add_argument("--back-to-back", action="store_true", help="completions back to back through the warm-up")
    ap.add_argument("--data", type=Path, default=HUMANEVAL_SINGLE, help="HumanEval single-line tasks (.jsonl.gz)")
    args = ap.parse_args()
    settings = json.loads(args.settings)
    if args.back_to_back:
        row = {
            "label": f"{args.label} back to back",
            "date": time.strftime("%Y-%m-%d"),
            "model": args.model or "default",
        }
        row |= {"settings": settings, **asyncio.run(back_to_back(args.python, args.model, settings, args.data))}
        rows = json.loads(args.out.read_text()) if args.out.exists() else []
        args.out.write_text(json.dumps([r for r in rows if r["label"] != row["label"]] + [row], indent=1) + "\n")
        print(json.dumps(row))
        return 0
    imports, torch_loaded, inits, firsts, warms, fills, repeated = [], False, [], [], [], [], []
    for rep in range(args.reps):
        seconds, torch_loaded = import_seconds(args.python)
        imports.append(seconds)
        init, first, warmed, again = asyncio.run(serve_seconds(args.python, args.model, settings, args.repeat))
        inits.append(init)
        firsts.append(first)
        if warmed is not None:
            warms.append(warmed)
        repeated += again
        fill = None if args.no_fill else fill_seconds(args.python, args.model, settings)
        if fill is not None:
            fills.append(fill)
        more = f", warm-up done {warmed:.2f}s" if warmed is not None else ""
        more += f", repeated completions p50 {statistics.median(again):.3f}s" if again else ""
        more += f", canvas-ls fill {fill:.2f}s" if fill is not None else ""
        print(
            f"[{rep + 1}/{args.reps}] import {seconds:.2f}s, initialize {init:.2f}s, first completion {first:.2f}s{more}",
            file=sys.stderr,
        )
    row = {
        "label": args.label,
        "date": time.strftime("%Y-%m-%d"),
        "reps": args.reps,
        "model": args.model or "default",
        "settings": settings,
        "import_lsp_s": round(statistics.median(imports), 3),
        "import_loads_torch": torch_loaded,
        "serve_to_initialize_s": round(statistics.median(inits), 3),
        "serve_to_first_completion_s": round(statistics.median(firsts), 3),
    }
    if warms:
        row["serve_to_warmed_up_s"] = round(statistics.median(warms), 3)
    if fills:
        row["cli_fill_s"] = round(statistics.median(fills), 3)
    if repeated:
        repeated.sort()
        row["repeated_completions"] = {
            "n": len(repeated),
            "p50_s": round(statistics.median(repeated), 3),
            "p95_s": round(repeated[min(len(repeated) - 1, round(0.95 * (len(repeated) - 1)))], 3),
        }
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    rows = [r for r in rows if r["label"] != args.label] + [row]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
