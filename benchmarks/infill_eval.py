"""HumanEval-Infilling through `canvas-ls serve` over stdio, the way an editor asks for a fill.

For each task: open the document `prompt + suffix`, request textDocument/inlineCompletion at the hole,
apply the first item, run the task's tests in a subprocess. Reports pass@1, exact match, parse rate,
fills that add syntax errors (the filled program does not parse, the canonical one does), empty rate,
forward passes per fill (from the server's log) and latency (p50/p95), per split and sampler, as JSON
(and a PNG for --steps-sweep).

    .venv/bin/python benchmarks/infill_eval.py --split single --limit 50
    .venv/bin/python benchmarks/infill_eval.py --split single multi random-light --limit 300 --model DIR
    .venv/bin/python benchmarks/infill_eval.py --split single --limit 100 --steps-sweep 2,4,8,16,32
    .venv/bin/python benchmarks/infill_eval.py --split single --limit 50 --sampler reference,commit   # side by side

--limit N takes a fixed spread subset (every k-th task), never the first N, so all problems are covered.
Evaluation data only: nothing here tunes on the tasks.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import difflib
import gzip
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lsprotocol import types as t
from pygls.exceptions import JsonRpcException

from canvas_ls.server.client import inline_params, open_doc, start, stop

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "benchmarks" / "human-eval-infilling"
SPLITS = {
    "single": "HumanEval-SingleLineInfilling.jsonl.gz",
    "multi": "HumanEval-MultiLineInfilling.jsonl.gz",
    "random": "HumanEval-RandomSpanInfilling.jsonl.gz",
    "random-light": "HumanEval-RandomSpanInfillingLight.jsonl.gz",
}


def load(split: str, limit: int | None, data_dir: Path, tasks_file: Path | None = None) -> list[dict]:
    with gzip.open(tasks_file or data_dir / SPLITS[split], "rt") as f:
        tasks = [json.loads(line) for line in f]
    if limit and limit < len(tasks):
        step = len(tasks) / limit
        tasks = [tasks[int(i * step)] for i in range(limit)]
    return tasks


def position(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset)
    col = offset - (text.rfind("\n", 0, offset) + 1)
    return line, len(text[offset - col : offset].encode("utf-16-le")) // 2


def passes(task: dict, filled: str, timeout: float = 15.0) -> bool | None:
    if not task.get("test"):
        return None  # a development task (benchmarks/dev_tasks.py): no tests, only exact match and similarity
    program = filled + "\n\n" + task["test"] + f"\n\ncheck({task['entry_point']})\n"
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(program)
    try:
        r = subprocess.run([sys.executable, f.name], capture_output=True, timeout=timeout)
        return r.returncode == 0
    except subprocess.TimeoutExpired:
        return False
    finally:
        os.unlink(f.name)


def parses(src: str) -> bool:
    try:
        ast.parse(src)
        return True
    except (SyntaxError, ValueError):
        return False


# What server/fill_job.py logs (at info) after every fill: "[7] single: 1 edit(s), 12 passes, ..."
FILL_LOG = re.compile(r"\[\d+\] \w+: \d+ edit\(s\), (\d+) passes")


def forward_passes(log_file: Path) -> list[int]:
    """Forward passes of each fill the server logged, in order."""
    try:
        return [int(m.group(1)) for m in FILL_LOG.finditer(log_file.read_text(errors="replace"))]
    except OSError:
        return []


async def run_split(split: str, tasks: list[dict], options: dict, progress: bool) -> dict:
    log_file = Path(tempfile.mkstemp(prefix="canvas-eval-", suffix=".log")[1])
    client = await start({**options, "logFile": str(log_file), "logLevel": "info"}, progress=False, log_level="info")
    rows = []
    try:
        for i, task in enumerate(tasks):
            prompt, suffix = task["prompt"], task["suffix"]
            text = prompt + suffix
            uri = open_doc(client, text, uri=f"file:///tmp/canvas-eval/{split}/{i}.py")
            line, col = position(text, len(prompt))
            t0 = time.perf_counter()
            error = None
            try:
                items = await asyncio.wait_for(
                    client.text_document_inline_completion_async(inline_params(uri, line, col)), 300
                )
            except (JsonRpcException, asyncio.TimeoutError) as exc:
                items, error = [], str(exc)
            seconds = time.perf_counter() - t0
            fill = items[0].insert_text if items else ""
            rows.append(score_row(task, fill, seconds, error))
            client.text_document_did_close(
                t.DidCloseTextDocumentParams(text_document=t.TextDocumentIdentifier(uri=uri))
            )
            if progress:
                done = rows[-1]
                print(
                    f"\r{split}: {i + 1}/{len(tasks)} pass={sum(bool(r['pass']) for r in rows)} exact={sum(r['exact'] for r in rows)} last={done['seconds']:.2f}s",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        await stop(client)
        passes_per_fill = forward_passes(log_file)
        log_file.unlink(missing_ok=True)
    if progress:
        print(file=sys.stderr)
    for r, p in zip(rows, passes_per_fill):
        r["passes"] = p
    return summarize(split, options, rows, passes_per_fill)


class OracleLength:
    """Evaluation only, never a product setting: a Filler whose hole gets exactly the canonical middle's
    token count (`exact` tokens: that many slots plus one for the end token, the end tokens barred from
    the first `exact`), the headroom a length finder could reach."""

    def __init__(self, filler, exact: int):
        self.filler, self.exact = filler, exact

    def fill(self, request, **kw):
        from dataclasses import replace

        settings = replace(request.settings, min_fill_tokens=self.exact)
        request = replace(request, max_tokens=self.exact + 1, length_candidates=(), settings=settings)
        return self.filler.fill(request, **kw)


def score_row(task: dict, fill: str, seconds: float, error: str | None, passes_: int | None = None) -> dict:
    """One task's figures from the text inserted at its hole."""
    prompt, suffix, canonical = task["prompt"], task["suffix"], task["canonical_solution"]
    filled = prompt + fill + suffix
    ok = parses(filled)
    return {
        "task_id": task["task_id"],
        "seconds": seconds,
        "empty": not fill,
        "error": error,
        "exact": fill.strip() == canonical.strip(),
        "similarity": difflib.SequenceMatcher(None, fill.strip(), canonical.strip()).ratio(),
        # the fill's length against the canonical middle's (characters, stripped) and its lines
        "length_ratio": len(fill.strip()) / max(1, len(canonical.strip())),
        "lines": len(fill.strip().splitlines()),
        "parses": ok,
        "adds_errors": not ok and parses(prompt + canonical + suffix),
        "pass": passes(task, filled),
        "passes": passes_,
        "fill": fill,  # what was inserted: to read a model's mistakes, not to tune on them
    }


def run_split_in_process(
    split: str, tasks: list[dict], options: dict, oracle: bool, progress: bool, cache: dict
) -> dict:
    """The same fills without the LSP transport: server/pipeline.py's complete_at on a model loaded in
    this process (loaded once per settings, kept in `cache`). oracle: each hole gets the canonical
    middle's token count (`OracleLength`)."""
    from canvas_ls.server import pipeline
    from canvas_ls.server.model_host import load_in_process
    from canvas_ls.server.settings import parse_settings

    settings, problems = parse_settings(options)
    if problems:
        raise SystemExit(f"settings: {problems}")
    load_key = (settings.modelPath, settings.device, settings.dtype, settings.compile, settings.canvasLength)
    if load_key not in cache:
        cache[load_key] = load_in_process(settings, warm_up=settings.warmUp == "first")
    filler = cache[load_key]
    rows = []
    for i, task in enumerate(tasks):
        text, offset = task["prompt"] + task["suffix"], len(task["prompt"])
        use = OracleLength(filler, len(filler.text.encode(task["canonical_solution"]))) if oracle else filler
        t0, error, fill, n_passes = time.perf_counter(), None, "", None
        try:
            out = pipeline.complete_at(use, text, offset, "python", settings, document=f"eval/{split}/{i}")
            fill = out.edits[0].text if out.edits else ""
            n_passes = out.result.forward_passes if out.result is not None else 0
        except pipeline.BadRequest as exc:
            error = str(exc)
        rows.append(score_row(task, fill, time.perf_counter() - t0, error, n_passes))
        filler.forget(f"eval/{split}/{i}")
        if progress:
            print(
                f"\r{split}: {i + 1}/{len(tasks)} pass={sum(bool(r['pass']) for r in rows)}",
                end="",
                file=sys.stderr,
                flush=True,
            )
    if progress:
        print(file=sys.stderr)
    return summarize(split, options, rows, [r["passes"] for r in rows if r["passes"] is not None])


def summarize(split: str, options: dict, rows: list[dict], passes_per_fill: list[int]) -> dict:
    lat = sorted(r["seconds"] for r in rows)
    n = len(rows)
    return {
        "split": split,
        "sampler": options.get("sampler", "auto"),
        "n": n,
        "pass@1": sum(r["pass"] for r in rows) / n if rows[0]["pass"] is not None else None,
        "exact": sum(r["exact"] for r in rows) / n,
        "similarity": statistics.fmean(r["similarity"] for r in rows),
        "length_ratio_p50": statistics.median(r["length_ratio"] for r in rows),
        "lines_p50": statistics.median(r["lines"] for r in rows),
        "short_third": sum(r["length_ratio"] < 1 / 3 for r in rows) / n,
        "parses": sum(r["parses"] for r in rows) / n,
        "adds_errors": sum(r["adds_errors"] for r in rows) / n,
        "empty": sum(r["empty"] for r in rows) / n,
        "errors": sum(r["error"] is not None for r in rows),
        "passes_mean": statistics.fmean(passes_per_fill) if passes_per_fill else None,
        "passes_p50": statistics.median(passes_per_fill) if passes_per_fill else None,
        "latency_p50": statistics.median(lat),
        "latency_p95": lat[min(n - 1, int(0.95 * n))],
        "rows": rows,
    }


def side_by_side(summaries: list[dict]) -> str:
    """A plain-text table: one line per (split, maxSteps, sampler, variant)."""
    head = (
        f"{'split':<13}{'steps':>6}  {'sampler':<10}{'pass@1':>8}{'exact':>7}{'sim':>6}{'len':>6}{'lines':>6}{'<1/3':>6}"
        f"{'parse':>7}{'empty':>7}{'adds errors':>13}"
        f"{'passes/fill':>13}{'p50 s':>8}  variant"
    )
    lines = [head, "-" * len(head)]
    for s in summaries:
        passes = f"{s['passes_mean']:.1f}" if s["passes_mean"] is not None else "-"
        p1 = f"{s['pass@1']:.3f}" if s["pass@1"] is not None else "-"
        lines.append(
            f"{s['split']:<13}{s['maxSteps']:>6}  {s['sampler']:<10}{p1:>8}{s['exact']:>7.3f}{s['similarity']:>6.3f}"
            f"{s['length_ratio_p50']:>6.2f}{s['lines_p50']:>6.1f}{s['short_third']:>6.2f}{s['parses']:>7.3f}{s['empty']:>7.3f}{s['adds_errors']:>13.3f}{passes:>13}{s['latency_p50']:>8.2f}  {json.dumps(s.get('variant', {}))}"
        )
    return "\n".join(lines)


def found_over_oracle(summaries: list[dict]) -> str:
    """Each variant's figures over the oracle-length run that follows it: the headroom it reached."""
    lines = [f"{'split':<13}{'sim':>7}{'pass@1':>8}{'len p50':>9}  found/oracle of variant"]
    for found, oracle in zip(summaries[::2], summaries[1::2]):

        def ratio(key):
            a, b = found[key], oracle[key]
            return f"{a / b:.2f}" if a is not None and b else "-"

        lines.append(
            f"{found['split']:<13}{ratio('similarity'):>7}{ratio('pass@1'):>8}{ratio('length_ratio_p50'):>9}  "
            f"{json.dumps(found.get('variant', {}))}"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", nargs="+", default=["single"], choices=sorted(SPLITS))
    ap.add_argument("--limit", type=int, default=50, help="fixed spread subset size (0 = all)")
    ap.add_argument("--model", help="checkpoint directory (default: the server's default)")
    ap.add_argument("--settings", default="{}", help="extra initializationOptions as JSON")
    ap.add_argument("--steps-sweep", help="comma-separated maxSteps values: pass@1 against steps (PNG)")
    ap.add_argument(
        "--sampler",
        default="",
        help="comma-separated samplers to compare side by side in one run: "
        "reference, commit, auto (default: the server's setting)",
    )
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument(
        "--tasks",
        type=Path,
        help="a .jsonl.gz of tasks instead of a HumanEval split, e.g. benchmarks/dev_tasks.py's development "
        "set (tasks without tests report exact match and similarity, no pass@1)",
    )
    ap.add_argument(
        "--variants",
        help="a JSON list of settings objects to compare side by side, each on top of --settings, e.g. "
        "'[{}, {\"repairRounds\": 0}]'",
    )
    ap.add_argument(
        "--in-process",
        action="store_true",
        help="fill through server/pipeline.py on a model loaded in this process instead of a server over "
        "stdio (the same fills; one model load for every variant)",
    )
    ap.add_argument(
        "--oracle",
        action="store_true",
        help="evaluation only: beside each variant, the same fills with the hole given exactly the canonical "
        "middle's token count (implies --in-process); reports found/oracle",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "infill_eval.json")
    args = ap.parse_args()
    options = json.loads(args.settings)
    # An evaluation measures the server's steady state: every fill after the warm-up (compiled step,
    # measured costs), not eager fills beside it (tasks come back to back, so it would never get a pause).
    options.setdefault("warmUp", "first")
    if args.model:
        options["modelPath"] = args.model
    sweep = [int(s) for s in args.steps_sweep.split(",")] if args.steps_sweep else [options.get("maxSteps")]
    samplers = [s.strip() for s in args.sampler.split(",") if s.strip()] or [options.get("sampler")]
    for name in samplers:
        if name not in (None, "auto", "reference", "commit"):
            ap.error(f"--sampler: unknown sampler {name!r} (reference, commit or auto)")
    variants = json.loads(args.variants) if args.variants else [{}]
    splits = [args.tasks.name.split(".")[0]] if args.tasks else args.split
    summaries, loaded = [], {}  # loaded: in-process models by their load settings
    for steps in sweep:
        for sampler in samplers:
            # a sweep's step count caps every mode: HumanEval's holes are line-mode fills (lineSteps)
            capped = {"maxSteps": steps, "lineSteps": steps} if steps else {}
            opts = dict(options, **capped, **({"sampler": sampler} if sampler else {}))
            for variant in variants:
                for split in splits:
                    tasks = load(split, args.limit, args.data, args.tasks)
                    for oracle in (False, True) if args.oracle else (False,):
                        if args.in_process or args.oracle:
                            s = run_split_in_process(split, tasks, {**opts, **variant}, oracle, True, loaded)
                        else:
                            s = asyncio.run(run_split(split, tasks, {**opts, **variant}, progress=True))
                        s["maxSteps"] = variant.get("maxSteps", steps or opts.get("maxSteps", 16))
                        s["lineSteps"] = variant.get("lineSteps", opts.get("lineSteps"))
                        s["variant"] = {**variant, "oracle": True} if oracle else variant
                        summaries.append(s)
                        print(
                            json.dumps(
                                {k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.items() if k != "rows"}
                            )
                        )
    if len(samplers) > 1 or len(sweep) > 1 or len(variants) > 1 or args.oracle:
        print(side_by_side(summaries))
    if args.oracle:
        print(found_over_oracle(summaries))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": options, "results": summaries}, indent=1) + "\n")
    if args.steps_sweep:
        import matplotlib  # the `bench` extra, slow to import: only to draw the plot

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for split in args.split:
            for sampler in samplers:
                pts = [
                    (s["maxSteps"], s["pass@1"])
                    for s in summaries
                    if s["split"] == split and s["sampler"] == (sampler or options.get("sampler", "auto"))
                ]
                ax.plot(*zip(*pts), marker="o", label=split if len(samplers) == 1 else f"{split} ({sampler})")
        ax.set_xlabel("max denoising steps")
        ax.set_ylabel("pass@1")
        ax.set_xscale("log", base=2)
        ax.legend()
        ax.set_title("HumanEval-Infilling pass@1 vs steps")
        png = args.out.with_suffix(".png")
        fig.savefig(png, dpi=120, bbox_inches="tight")
        print(f"wrote {png}", file=sys.stderr)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
