"""Fill latency of this checkout against another revision, side by side: each side's fills run in
processes of their own (one model, one compiled step each, as in a server), alternated before/after
over several rounds so that a change in the machine's speed hits both alike.

    .venv/bin/python benchmarks/fills_ab.py --rev 0bf19a1                 # HEAD's tree vs that revision
    .venv/bin/python benchmarks/fills_ab.py --rev HEAD~3 --rounds 3 --single 20 --multi 4

The other revision is checked out with `git worktree` into a temporary directory and imported in place
of this one (PYTHONPATH ahead of the editable install); both sides use this checkout's virtual
environment, model (`--model`, else the random-weight `small` preset of `latency.py --cpu-table`) and
the new CPU defaults (`latency.py` NEW). Per process: the warm-up, then `--single` single-line and
`--multi` multi-line fills at `latency.py`'s DOC (a fresh prompt each), with the p50 of the fills and
of the decoder steps inside them. Writes results/fills_ab.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one_process(label: str, model: str, single: int, multi: int) -> dict:
    """Run in a child: load, warm up, fill; returns the side's figures."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from latency import DOC, HOLE, NEW

    import canvas_ls.model.step as step_module
    from canvas_ls.model.infill import Infiller
    from canvas_ls.model.loading import load_model
    from canvas_ls.server.pipeline import make_judge, run_fill
    from canvas_ls.server.settings import parse_settings

    settings, problems = parse_settings({"modelPath": model, **NEW})
    assert not problems, problems
    loaded = load_model(Path(model), dtype=settings.dtype)
    inf = Infiller(loaded, make_judge=make_judge, compile=settings.compile, threads=settings.threads)
    report = inf.warm_up(settings.sampler_settings())
    steps: list[float] = []
    call = step_module.DecoderStep.__call__

    def timed(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = call(self, *args, **kwargs)
        steps.append(1000 * (time.perf_counter() - t0))
        return out

    step_module.DecoderStep.__call__ = timed
    out = {"label": label, "source": step_module.__file__, "warm_up": report}
    for mode, slots, reps in (("single", (24,), single), ("multi", (64,), multi)):
        ms, threads = [], collections.Counter()
        steps.clear()
        for _ in range(reps):
            t0 = time.perf_counter()
            result = run_fill(inf, DOC, [(HOLE, HOLE)], "python", mode, slots, settings).result
            ms.append(1000 * (time.perf_counter() - t0))
            threads[result.threads] += 1
        out[mode] = {
            "p50_ms": round(statistics.median(ms), 1),
            "step_p50_ms": round(statistics.median(steps), 2),
            "passes": result.forward_passes,
            "threads": dict(threads),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", required=True, help="the revision to compare this checkout with")
    ap.add_argument("--model", default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--single", type=int, default=20, help="single-line fills per process")
    ap.add_argument("--multi", type=int, default=4, help="multi-line fills per process")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fills_ab.json")
    ap.add_argument("--child", nargs=2, metavar=("LABEL", "MODEL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one_process(args.child[0], args.child[1], args.single, args.multi)))
        return 0

    if args.model is None:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from latency import small_model_dir

        args.model = str(small_model_dir(ROOT))
    rev = subprocess.run(
        ["git", "rev-parse", "--short", args.rev], cwd=ROOT, capture_output=True, text=True, check=True
    )
    here = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    with tempfile.TemporaryDirectory(prefix="fills-ab-") as tmp:
        tree, pkg = Path(tmp) / "tree", Path(tmp) / "pkg" / "canvas_ls"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), args.rev], cwd=ROOT, check=True)
        try:
            pkg.mkdir(parents=True)
            for part in ("model", "server"):  # the package layout the editable install maps
                (pkg / part).symlink_to(tree / part)
            sides = {
                f"before ({rev.stdout.strip()})": {**os.environ, "PYTHONPATH": str(pkg.parent)},
                f"after ({here.stdout.strip()}, this tree)": dict(os.environ),
            }
            runs: list[dict] = []
            for r in range(args.rounds):
                for label, env in sides.items():
                    cmd = [sys.executable, __file__, "--rev", args.rev, "--child", label, args.model]
                    cmd += ["--single", str(args.single), "--multi", str(args.multi)]
                    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                    runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
                    s, m = runs[-1]["single"], runs[-1]["multi"]
                    print(
                        f"[round {r + 1}/{args.rounds}] {label}: single {s['p50_ms']} ms (step {s['step_p50_ms']} ms), "
                        f"multi {m['p50_ms']} ms (step {m['step_p50_ms']} ms)",
                        file=sys.stderr,
                    )
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    summary = {}
    for label in sides:
        mine = [run for run in runs if run["label"] == label]
        summary[label] = {
            mode: {
                key: round(statistics.median(run[mode][key] for run in mine), 2) for key in ("p50_ms", "step_p50_ms")
            }
            for mode in ("single", "multi")
        }
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "rev": args.rev,
        "model": args.model,
        "summary": summary,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
