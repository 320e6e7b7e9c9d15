"""How long canvas-ls takes to start: the import of the language server, and `canvas-ls serve` from
spawn to its answer to `initialize` (what an editor waits for), then to the first inline completion.

    .venv/bin/python benchmarks/startup.py                      # this checkout
    .venv/bin/python benchmarks/startup.py --python OTHER/bin/python --label before   # another install

Each figure is the median of --reps fresh processes; results are appended to results/startup.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from lsprotocol import types as t

from canvas_ls.server.client import inline_params, open_doc, start, stop

ROOT = Path(__file__).resolve().parent.parent
DOC = "def mean(values):\n    total = sum(values)\n    return \n"


def import_seconds(python: str) -> tuple[float, bool]:
    code = "import time, sys; t0 = time.perf_counter(); import canvas_ls.server.lsp; print(time.perf_counter() - t0, 'torch' in sys.modules)"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), out[1] == "True"


async def serve_seconds(python: str, model: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    client = await start({"modelPath": model} if model else {}, log_level=None,
                         command=[python, "-m", "canvas_ls.server.cli", "serve"])
    initialized = time.perf_counter() - t0
    try:
        uri = open_doc(client, DOC)
        await client.text_document_inline_completion_async(inline_params(uri, 2, 11))
        first = time.perf_counter() - t0
    finally:
        await stop(client)
    return initialized, first


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=sys.executable, help="the interpreter of the install to measure")
    ap.add_argument("--label", default="this checkout")
    ap.add_argument("--model", default="", help="modelPath (default: the server's own default)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "startup.json")
    args = ap.parse_args()
    imports, torch_loaded, inits, firsts = [], False, [], []
    for rep in range(args.reps):
        seconds, torch_loaded = import_seconds(args.python)
        imports.append(seconds)
        init, first = asyncio.run(serve_seconds(args.python, args.model))
        inits.append(init)
        firsts.append(first)
        print(f"[{rep + 1}/{args.reps}] import {seconds:.2f}s, initialize {init:.2f}s, first completion {first:.2f}s", file=sys.stderr)
    row = {"label": args.label, "date": time.strftime("%Y-%m-%d"), "reps": args.reps,
           "import_lsp_s": round(statistics.median(imports), 3), "import_loads_torch": torch_loaded,
           "serve_to_initialize_s": round(statistics.median(inits), 3),
           "serve_to_first_completion_s": round(statistics.median(firsts), 3)}
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    rows = [r for r in rows if r["label"] != args.label] + [row]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
