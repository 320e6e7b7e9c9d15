"""End-to-end fill latency by span size and step limit, in process (no LSP transport).

Each cell is the median of --reps fills through `server.pipeline.run_fill` (so the syntax judge,
repair rounds and post-processing are included), with forward passes and tokens per pass. Also:
the cost of trying several slot counts as one batch (length finding), and the saving from reusing the
prompt's K/V on the next keystroke. Writes JSON and a PNG.

    .venv/bin/python benchmarks/latency.py                       # default model, CPU
    .venv/bin/python benchmarks/latency.py --model DIR --device cuda --reps 10
    .venv/bin/python benchmarks/latency.py --threads-sweep     # torch threads, idle and under a background load
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from canvas_ls.server.model_host import ModelHost
from canvas_ls.server.pipeline import run_fill
from canvas_ls.server.settings import parse_settings

ROOT = Path(__file__).resolve().parent.parent
DOC = '''import math


def distance(p, q):
    """Euclidean distance between two points."""
    dx = p[0] - q[0]
    dy = p[1] - q[1]
    return math.sqrt(dx * dx + dy * dy)


def nearest(points, target):
    best = None
    best_d = math.inf
    for p in points:
        d = distance(p, target)
        if d < best_d:
            best, best_d = p, d
    return best
'''
HOLE = DOC.index("    return math.sqrt")  # fill the last line of distance()


def measure(infiller, settings, slots, reps, text=DOC, hole=(HOLE, HOLE), key=None, mode="multi"):
    times, passes, tpp = [], [], []
    for rep in range(reps):
        t0 = time.perf_counter()
        out = run_fill(infiller, text, [hole], "python", mode, slots, settings, document=key)
        times.append(time.perf_counter() - t0)
        passes.append(out.result.forward_passes)
        tpp.append(out.result.tokens_per_pass)
    return {"median_s": statistics.median(times), "min_s": min(times), "passes": statistics.median(passes), "tokens_per_pass": statistics.median(tpp)}


def _busy() -> None:
    while True:  # a CPU-bound neighbour: another build, a test run, a browser tab
        pass


def threads_sweep(infiller, base, reps: int, out: Path) -> int:
    """Single- and multi-line fills at each torch thread count, side by side, idle and while one
    busy background process runs. The default (setting threads=0) is one fewer than the cores."""
    import multiprocessing as mp
    import os

    cores = os.cpu_count() or 1
    counts = sorted({1, max(1, cores - 1), cores})
    default = base.torch_threads()
    rows = []
    for load in ("idle", "one busy process"):
        neighbour = mp.Process(target=_busy, daemon=True) if load != "idle" else None
        if neighbour is not None:
            neighbour.start()
        try:
            for n in counts:
                torch.set_num_threads(n)
                for mode, slots in (("single", (24,)), ("multi", (64,))):
                    times = []
                    for _ in range(reps):
                        t0 = time.perf_counter()
                        run_fill(infiller, DOC, [(HOLE, HOLE)], "python", mode, slots, base)
                        times.append(time.perf_counter() - t0)
                    times.sort()
                    cell = {"load": load, "threads": n, "default": n == default, "mode": mode,
                            "p50_ms": round(1000 * statistics.median(times), 1), "p95_ms": round(1000 * times[min(len(times) - 1, int(0.95 * len(times)))], 1)}
                    rows.append(cell)
                    print(json.dumps(cell), file=sys.stderr)
        finally:
            if neighbour is not None:
                neighbour.terminate()
    result = {"model": infiller.info().describe(), "cores": cores, "default_threads": default, "reps": reps,
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, mode in zip(axes, ("single", "multi")):
        for load in ("idle", "one busy process"):
            cells = [r for r in rows if r["mode"] == mode and r["load"] == load]
            ax.plot([c["threads"] for c in cells], [c["p50_ms"] for c in cells], marker="o", label=load)
        ax.set(xlabel="torch threads", ylabel="p50 fill latency (ms)", title=f"{mode}-line fill", yscale="log")
        ax.axvline(default, color="grey", linestyle=":", label=f"default ({default})")
        ax.legend()
    fig.suptitle(f"{result['model']}, {cores} cores", fontsize=8)
    fig.savefig(out.with_suffix(".png"), dpi=120, bbox_inches="tight")
    print(f"wrote {out} and {out.with_suffix('.png')}", file=sys.stderr)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--slots", default="8,32,128")
    ap.add_argument("--steps", default="4,8,16,32")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "latency.json")
    ap.add_argument("--threads-sweep", action="store_true", help="only the torch-threads comparison (results/latency_threads.json)")
    args = ap.parse_args()
    base, problems = parse_settings({"modelPath": args.model, "device": args.device, "dtype": args.dtype})
    if problems:
        sys.exit("; ".join(problems))
    infiller = ModelHost().get(base)
    print(f"model: {infiller.info().describe()}", file=sys.stderr)
    measure(infiller, base, (8,), 1)  # warm-up: first-call allocations and lazy inits
    if args.threads_sweep:
        return threads_sweep(infiller, base, args.reps, args.out.with_name("latency_threads.json"))

    grid = []
    for steps in map(int, args.steps.split(",")):
        settings, _ = parse_settings({"maxSteps": steps}, base)
        for slots in map(int, args.slots.split(",")):
            cell = {"steps": steps, "slots": slots, **measure(infiller, settings, (slots,), args.reps)}
            grid.append(cell)
            print(json.dumps(cell), file=sys.stderr)

    settings, _ = parse_settings({"maxSteps": 16}, base)
    length = {
        "one_candidate_24": measure(infiller, settings, (24,), args.reps, mode="single"),
        "three_candidates_8_16_24": measure(infiller, settings, (8, 16, 24), args.reps, mode="single"),
    }
    # Prefix reuse: a fill, then the user types one character at the cursor and asks again.
    typed = DOC[:HOLE] + "r" + DOC[HOLE:]
    cold = measure(infiller, settings, (24,), args.reps, key=None, mode="single")
    run_fill(infiller, DOC, [(HOLE, HOLE)], "python", "single", (24,), settings, document="doc")
    warm = measure(infiller, settings, (24,), args.reps, text=typed, hole=(HOLE + 1, HOLE + 1), key="doc", mode="single")
    result = {
        "device": infiller.info().device, "dtype": infiller.info().dtype, "model": infiller.info().describe(),
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"), "reps": args.reps,
        "grid": grid, "length_finding": length, "prefix_reuse": {"fresh": cold, "reused_after_keystroke": warm},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for slots in sorted({c["slots"] for c in grid}):
        cells = [c for c in grid if c["slots"] == slots]
        a1.plot([c["steps"] for c in cells], [1000 * c["median_s"] for c in cells], marker="o", label=f"{slots} slots")
        a2.plot([c["steps"] for c in cells], [c["tokens_per_pass"] for c in cells], marker="o", label=f"{slots} slots")
    a1.set(xlabel="max steps", ylabel="median fill latency (ms)", xscale="log", title=f"latency ({result['device']})")
    a2.set(xlabel="max steps", ylabel="tokens per forward pass", xscale="log", title="parallelism")
    a1.set_xscale("log", base=2)
    a2.set_xscale("log", base=2)
    a1.legend()
    fig.suptitle(result["model"], fontsize=8)
    png = args.out.with_suffix(".png")
    fig.savefig(png, dpi=120, bbox_inches="tight")
    print(json.dumps({k: v for k, v in result.items() if k != "grid"}, indent=1))
    print(f"wrote {args.out} and {png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
