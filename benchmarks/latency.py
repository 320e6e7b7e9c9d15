"""End-to-end fill latency by span size and step limit, in process (no LSP transport).

Each cell is the median of --reps fills through `server.pipeline.run_fill` (so the syntax judge,
repair rounds and post-processing are included), with forward passes and tokens per pass. Also:
the cost of trying several slot counts as one batch (length finding), and the saving from reusing the
prompt's K/V on the next keystroke. Writes JSON and a PNG.

    .venv/bin/python benchmarks/latency.py                       # default model, CPU
    .venv/bin/python benchmarks/latency.py --model DIR --device cuda --reps 10
    .venv/bin/python benchmarks/latency.py --threads-sweep     # torch threads, idle and under a background load
    .venv/bin/python benchmarks/latency.py --cpu-table         # the CPU speed levers (issue 13): tiny, "small", bundled
    .venv/bin/python benchmarks/latency.py --statistics-ab     # the sampler's statistics compiled vs eager
    .venv/bin/python benchmarks/latency.py --packed-ab         # bf16 linear weights prepacked vs plain

--cpu-table: p50/p95 of single-line, line-start ("line" mode: lineSlots, lineSteps) and multi-line fills for the tiny model, a random-weight model of the
`small` training preset (8 layers, built once into benchmarks/results/tmp/small-model) and the bundled
model (trained, the `compact` preset: 6 layers, narrower MLPs; model/bundled/), under
the old CPU defaults, each new default alone and all of them together, idle and beside one busy
process, every configuration side by side in one run (round robin, so load changes hit all alike).
Writes results/latency_cpu.json and .png.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import statistics
import sys
import time
from dataclasses import replace as dc_replace
from pathlib import Path

import torch

from canvas_ls.model.threads import cores
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
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "passes": statistics.median(passes),
        "tokens_per_pass": statistics.median(tpp),
    }


def _busy() -> None:
    while True:  # a CPU-bound neighbour: another build, a test run, a browser tab
        pass


def threads_sweep(infiller, base, reps: int, out: Path) -> int:
    """Single- and multi-line fills at each torch thread count, side by side, idle and while one
    busy background process runs, each count fixed (the `threads` setting's N). Auto (0) chooses among
    these per fill (model/threads.py); --cpu-table measures it."""
    from canvas_ls.model.threads import ThreadPolicy

    policy = ThreadPolicy(0)
    n_cores = policy.cores
    counts = sorted({1, policy.fewest, n_cores})
    default = policy.fewest  # what auto takes beside a busy process (and the fixed default before it)
    rows = []
    for load in ("idle", "one busy process"):
        neighbour = mp.Process(target=_busy, daemon=True) if load != "idle" else None
        if neighbour is not None:
            neighbour.start()
        try:
            for n in counts:
                infiller.threads = ThreadPolicy(n)  # fixed at n for these fills
                for mode, slots in (("single", (24,)), ("multi", (64,))):
                    times = []
                    for _ in range(reps):
                        t0 = time.perf_counter()
                        run_fill(infiller, DOC, [(HOLE, HOLE)], "python", mode, slots, base)
                        times.append(time.perf_counter() - t0)
                    times.sort()
                    cell = {
                        "load": load,
                        "threads": n,
                        "auto_when_busy": n == default,
                        "mode": mode,
                        "p50_ms": round(1000 * statistics.median(times), 1),
                        "p95_ms": round(1000 * times[min(len(times) - 1, int(0.95 * len(times)))], 1),
                    }
                    rows.append(cell)
                    print(json.dumps(cell), file=sys.stderr)
        finally:
            if neighbour is not None:
                neighbour.terminate()
    result = {
        "model": infiller.info().describe(),
        "cores": n_cores,
        "fewest_threads": default,
        "reps": reps,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")

    import matplotlib  # the `bench` extra, slow to import: only to draw the plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, mode in zip(axes, ("single", "multi")):
        for load in ("idle", "one busy process"):
            cells = [r for r in rows if r["mode"] == mode and r["load"] == load]
            ax.plot([c["threads"] for c in cells], [c["p50_ms"] for c in cells], marker="o", label=load)
        ax.set(xlabel="torch threads", ylabel="p50 fill latency (ms)", title=f"{mode}-line fill", yscale="log")
        ax.axvline(default, color="grey", linestyle=":", label=f"auto beside a busy process ({default})")
        ax.legend()
    fig.suptitle(f"{result['model']}, {n_cores} cores", fontsize=8)
    fig.savefig(out.with_suffix(".png"), dpi=120, bbox_inches="tight")
    print(f"wrote {out} and {out.with_suffix('.png')}", file=sys.stderr)
    return 0


# ---- --cpu-table: the CPU speed levers of issue 13, side by side ------------------------------------

# The CPU defaults before issue 13, as settings (threads was already 1 on two cores).
OLD = {
    "threads": max(1, cores() - 1),  # the fixed default before: one core free
    "dtype": "float32",
    "compile": "off",
    "suffixTokens": 32,
    "singleLineSteps": 16,
    "singleLineDecoder": "diffusion",
}
NEW = {
    "threads": 0,
    "dtype": "auto",
    "compile": "auto",
    "suffixTokens": 8,
    "singleLineSteps": 8,
    "singleLineDecoder": "auto",
}
LEVERS = {  # each new default alone, on top of the old ones
    "bf16 (dtype auto)": ["dtype"],
    "compile auto": ["compile"],
    "canvas (suffixTokens 8)": ["suffixTokens"],
    "singleLineSteps 8": ["singleLineSteps"],
    "left-to-right draft (auto)": ["singleLineDecoder"],
    "threads auto": ["threads"],
}


MODELS = ["tiny", "small", "bundled"]  # --cpu-table's models, in table order


def cpu_configs() -> dict[str, dict]:
    configs = {"old defaults": dict(OLD)}
    for name, keys in LEVERS.items():
        configs[name] = {**OLD, **{k: NEW[k] for k in keys}}
    configs["new defaults (all)"] = dict(NEW)
    # the same, single lines always on the canvas: what the canvas alone costs at <= 8 passes
    configs["new defaults, canvas only"] = {**NEW, "singleLineDecoder": "diffusion"}
    return configs


def small_model_dir(root: Path) -> Path:
    """A random-weight checkpoint of the `small` preset (never committed: results/tmp is ignored)."""
    from canvas_ls.model.tiny import build_random_checkpoint

    out = root / "benchmarks" / "results" / "tmp" / "small-model"
    if not (out / "config.json").exists():
        print(f"building a random-weight `small` checkpoint in {out} ...", file=sys.stderr)
        build_random_checkpoint(out, preset="small")
    return out


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


# --cpu-table's fills: the last line of distance() as a single line (24 slots), as a completion at the
# start of that line with code after it (the server's "line" mode: lineSlots, lineSteps), and multi-line.
TABLE_MODES = ("single", "line", "multi")


def cpu_modes(args) -> tuple[tuple[str, tuple[int, ...], int], ...]:
    return (("single", (24,), args.single_reps), ("line", (24,), args.single_reps), ("multi", (64,), args.multi_reps))


def cpu_table(args) -> int:
    from canvas_ls.model.infill import Infiller
    from canvas_ls.model.loading import load_model
    from canvas_ls.server.model_host import demo_model_dir, load_in_process
    from canvas_ls.server.pipeline import make_judge

    torch.set_num_threads(1)
    models = {}
    for name in args.models.split(","):
        if name == "tiny":
            base, _ = parse_settings({"modelPath": str(demo_model_dir())})
            load_in_process(base, warm_up=False)  # builds the tiny demo model once if missing
            models["tiny"] = demo_model_dir()
        elif name == "small":
            models["small"] = small_model_dir(ROOT)
        elif name == "bundled":
            from canvas_ls.model import BUNDLED_DIR

            models["bundled"] = BUNDLED_DIR
    configs = cpu_configs()
    fillers, loaded = {}, {}
    for mname, path in models.items():
        for cname, cfg in configs.items():
            settings, problems = parse_settings({"modelPath": str(path), **cfg})
            assert not problems, problems
            key = (mname, cfg["dtype"])
            if key not in loaded:
                loaded[key] = load_model(path, dtype=cfg["dtype"])
            # its own Infiller: its own prompt cache, decoder step and running averages
            inf = Infiller(
                dc_replace(loaded[key]), make_judge=make_judge, compile=cfg["compile"], threads=cfg["threads"]
            )
            t0 = time.perf_counter()
            report = inf.warm_up(settings.sampler_settings())
            print(f"{mname} / {cname}: warm-up {time.perf_counter() - t0:.1f} s {report}", file=sys.stderr)
            fillers[(mname, cname)] = (inf, settings, report)
    cells: dict[tuple, dict] = {}
    for load in args.loads.split(","):
        neighbour = mp.Process(target=_busy, daemon=True) if load == "busy" else None
        if neighbour is not None:
            neighbour.start()
        try:
            for mode, slots, reps in cpu_modes(args):
                for rep in range(reps):
                    for (mname, cname), (inf, settings, _) in fillers.items():  # round robin: side by side
                        t0 = time.perf_counter()
                        slots = tuple(settings.lineSlots) if mode == "line" else slots
                        out = run_fill(inf, DOC, [(HOLE, HOLE)], "python", mode, slots, settings)
                        dt = time.perf_counter() - t0
                        cell = cells.setdefault(
                            (mname, cname, load, mode),
                            {"ms": [], "passes": [], "canvas": [], "paths": [], "threads": []},
                        )
                        cell["ms"].append(1000 * dt)
                        cell["passes"].append(out.result.forward_passes)
                        cell["canvas"].append(out.result.canvas_length)
                        cell["paths"].append(out.result.sampler)
                        cell["threads"].append(out.result.threads)
                    print(f"[{load} {mode} {rep + 1}/{reps}]", file=sys.stderr)
        finally:
            if neighbour is not None:
                neighbour.terminate()
    rows = []
    for (mname, cname, load, mode), c in cells.items():
        inf, settings, report = fillers[(mname, cname)]
        rows.append(
            {
                "model": mname,
                "config": cname,
                "load": load,
                "mode": mode,
                "n": len(c["ms"]),
                "p50_ms": round(statistics.median(c["ms"]), 1),
                "p95_ms": round(_percentile(c["ms"], 0.95), 1),
                "passes": statistics.median(c["passes"]),
                "canvas": statistics.median(c["canvas"]),
                "left_to_right": sum(p == "autoregressive" for p in c["paths"]) / len(c["paths"]),
                "threads": statistics.median(c["threads"]),
                "threads_seen": sorted(set(c["threads"])),
                "dtype": inf.info().dtype,
                "compile": inf.step.status,
                "warm_up": report,
            }
        )
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "cores": cores(),
        "cpu": platform.processor() or platform.machine(),
        "configs": configs,
        "models": {m: str(p) for m, p in models.items()},
        "rows": rows,
    }
    out = args.out.with_name("latency_cpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(cpu_markdown(rows))
    _cpu_plot(rows, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}", file=sys.stderr)
    return 0


def _ab_setup(args) -> tuple[Path, object]:
    """One torch thread; the model (--model, else the `small` preset) and its settings at the new defaults."""
    torch.set_num_threads(1)
    path = Path(args.model) if args.model else small_model_dir(ROOT)
    settings, problems = parse_settings({"modelPath": str(path), **NEW, "threads": 1})
    assert not problems, problems
    return path, settings


def _ab_fills(fillers: dict, settings, args, cells: dict, before=None) -> None:
    """Single- and multi-line fills, the variants (name -> Infiller) alternated fill by fill (round
    robin, so a change in load hits them alike); before(name) switches a shared Infiller to a variant.
    Milliseconds go into cells[(mode, name)]."""
    for mode, slots, reps in (("single", (24,), args.single_reps), ("multi", (64,), args.multi_reps)):
        for rep in range(reps):
            for name, inf in fillers.items():
                if before is not None:
                    before(name)
                t0 = time.perf_counter()
                run_fill(inf, DOC, [(HOLE, HOLE)], "python", mode, slots, settings)
                cells.setdefault((mode, name), []).append(1000 * (time.perf_counter() - t0))
            print(f"[{mode} {rep + 1}/{reps}]", file=sys.stderr)


def _ab_report(cells: dict, column: str, before: str, after: str, path: Path, out: Path) -> None:
    """Print each measurement's two p50s and their ratio; write the rows as JSON to `out`."""
    rows = [
        {"what": w, column: n, "n": len(v), "p50_ms": round(statistics.median(v), 1)} for (w, n), v in cells.items()
    ]
    for what in dict.fromkeys(w for w, _ in cells):
        a, b = (statistics.median(cells[(what, n)]) for n in (before, after))
        print(f"{what}: {before} {a:.1f} ms, {after} {b:.1f} ms p50 ({a / b:.2f}x)")
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "model": str(path), "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)


def statistics_ab(args) -> int:
    """The sampler's statistics of each step compiled beside the decoder step against eager ones: one
    Infiller (the `small` preset at the new defaults, compiled), the compiled statistics switched on
    and off fill by fill (round robin), single- and multi-line fills."""
    from canvas_ls.model.infill import Infiller
    from canvas_ls.model.loading import load_model
    from canvas_ls.server.pipeline import make_judge

    path, settings = _ab_setup(args)
    inf = Infiller(load_model(path, dtype=NEW["dtype"]), make_judge=make_judge, compile=NEW["compile"], threads=1)
    print(f"warm-up: {inf.warm_up(settings.sampler_settings())}", file=sys.stderr)
    compiled = inf.step._compiled_statistics
    if compiled is None:
        sys.exit(f"the statistics are not compiled here ({inf.step.status}): nothing to compare")

    def switch(name: str) -> None:
        inf.step._compiled_statistics = compiled if name == "compiled" else None

    cells: dict[tuple, list[float]] = {}
    _ab_fills({"eager": inf, "compiled": inf}, settings, args, cells, before=switch)
    switch("compiled")
    _ab_report(cells, "statistics", "eager", "compiled", path, args.out.with_name("latency_statistics.json"))
    return 0


def packed_ab(args) -> int:
    """bf16 linear weights prepacked for oneDNN (model/packed_linear.py) against plain ones: two
    Infillers of the `small` preset at the new defaults (both compiled), fills alternated (round
    robin), single- and multi-line; also one decoder step of each."""
    from canvas_ls.model.infill import Infiller
    from canvas_ls.model.loading import load_model
    from canvas_ls.server.pipeline import make_judge

    path, settings = _ab_setup(args)
    fillers = {}
    for name, pack in (("plain", False), ("packed", True)):
        inf = Infiller(
            load_model(path, dtype=NEW["dtype"], pack=pack), make_judge=make_judge, compile=NEW["compile"], threads=1
        )
        print(f"{name}: warm-up {inf.warm_up(settings.sampler_settings())}", file=sys.stderr)
        fillers[name] = inf
    cells: dict[tuple, list[float]] = {}
    examples = {name: inf.warmer.step_example(32, with_sc=True) for name, inf in fillers.items()}
    with torch.inference_mode():
        for rep in range(20):
            for name, inf in fillers.items():
                t0 = time.perf_counter()
                inf.step(*examples[name])
                cells.setdefault(("step (canvas 32)", name), []).append(1000 * (time.perf_counter() - t0))
    _ab_fills(fillers, settings, args, cells)
    _ab_report(cells, "weights", "plain", "packed", path, args.out.with_name("latency_packed.json"))
    return 0


def cpu_markdown(rows: list[dict]) -> str:
    """The README table: one line per model and configuration, p50 / p95 (passes) per load and mode."""
    loads = sorted({r["load"] for r in rows}, key=["idle", "busy"].index)
    head = (
        "| model | configuration | "
        + " | ".join(f"{m}{'' if m == 'line' else '-line'}, {l}" for l in loads for m in TABLE_MODES)
        + " |"
    )
    lines = [head, "|" + " --- |" * (2 + len(TABLE_MODES) * len(loads))]
    order = list(cpu_configs())
    for model in sorted({r["model"] for r in rows}, key=MODELS.index):
        for cname in order:
            cells = []
            for load in loads:
                for mode in TABLE_MODES:
                    r = next(
                        (
                            r
                            for r in rows
                            if (r["model"], r["config"], r["load"], r["mode"]) == (model, cname, load, mode)
                        ),
                        None,
                    )
                    if r is None:
                        cells.append("")
                        continue
                    ltr = f", {100 * r['left_to_right']:.0f}% left to right" if r["left_to_right"] else ""
                    threads = "/".join(map(str, r.get("threads_seen", [1])))
                    cells.append(
                        f"{r['p50_ms']:.0f} / {r['p95_ms']:.0f} ms ({r['passes']:g} passes, canvas {r['canvas']:g},"
                        f" {threads} thr{ltr})"
                    )
            lines.append(f"| {model} | {cname} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cpu_plot(rows: list[dict], png: Path) -> None:
    import matplotlib  # the `bench` extra, slow to import: only to draw the plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows}, key=MODELS.index)
    loads = sorted({r["load"] for r in rows}, key=["idle", "busy"].index)
    order = list(cpu_configs())
    fig, axes = plt.subplots(len(models), len(TABLE_MODES), figsize=(19, 4.2 * len(models)), squeeze=False)
    for i, model in enumerate(models):
        for j, mode in enumerate(TABLE_MODES):
            ax = axes[i][j]
            width = 0.8 / len(loads)
            for k, load in enumerate(loads):
                vals = [
                    next(
                        (
                            r["p50_ms"]
                            for r in rows
                            if (r["model"], r["config"], r["load"], r["mode"]) == (model, c, load, mode)
                        ),
                        0,
                    )
                    for c in order
                ]
                ax.barh([y + k * width for y in range(len(order))], vals, height=width, label=load)
            ax.set_yticks([y + width * (len(loads) - 1) / 2 for y in range(len(order))], order, fontsize=8)
            ax.invert_yaxis()
            ax.set(xlabel="p50 fill latency (ms)", title=f"{model}: {mode}{'' if mode == 'line' else '-line'} fill")
            if mode == "single" and model != "tiny":
                ax.axvline(150, color="grey", linestyle=":", label="target 150 ms")
            ax.legend(fontsize=8)
    fig.suptitle("CPU defaults side by side in one run (torch threads as each configuration says)", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=120, bbox_inches="tight")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--slots", default="8,32,128")
    ap.add_argument("--steps", default="4,8,16,32")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "latency.json")
    ap.add_argument(
        "--threads-sweep", action="store_true", help="only the torch-threads comparison (results/latency_threads.json)"
    )
    ap.add_argument(
        "--cpu-table", action="store_true", help="the CPU speed levers side by side (results/latency_cpu.json)"
    )
    ap.add_argument("--models", default=",".join(MODELS), help="--cpu-table: any of tiny, small, bundled")
    ap.add_argument(
        "--single-reps", type=int, default=15, help="--cpu-table: single-line fills per configuration and load"
    )
    ap.add_argument(
        "--multi-reps", type=int, default=5, help="--cpu-table: multi-line fills per configuration and load"
    )
    ap.add_argument(
        "--loads", default="idle,busy", help="--cpu-table: idle and/or busy (one CPU-bound neighbour process)"
    )
    ap.add_argument(
        "--statistics-ab",
        action="store_true",
        help="the sampler statistics compiled vs eager, side by side (results/latency_statistics.json)",
    )
    ap.add_argument(
        "--packed-ab",
        action="store_true",
        help="prepacked bf16 linear weights vs plain ones, side by side (results/latency_packed.json)",
    )
    args = ap.parse_args()
    if args.packed_ab:
        return packed_ab(args)
    if args.cpu_table:
        return cpu_table(args)
    if args.statistics_ab:
        return statistics_ab(args)
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
    warm = measure(
        infiller, settings, (24,), args.reps, text=typed, hole=(HOLE + 1, HOLE + 1), key="doc", mode="single"
    )
    result = {
        "device": infiller.info().device,
        "dtype": infiller.info().dtype,
        "model": infiller.info().describe(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
        "reps": args.reps,
        "grid": grid,
        "length_finding": length,
        "prefix_reuse": {"fresh": cold, "reused_after_keystroke": warm},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")

    import matplotlib  # the `bench` extra, slow to import: only to draw the plot

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
