"""Several training runs that continue one another, on one axis of cumulative tokens.

    .venv/bin/python benchmarks/plot_training_runs.py --out benchmarks/results/bundled_training_loss.png \
        "window 1, command 1=build/train/runs/window1" "window 1, command 2=build/train/runs/window2" ...

Each argument is LABEL=RUN_DIR (a run directory of `python -m canvas_ls.model.training.train`, with its
metrics.jsonl); runs are laid end to end in the order given. Lines: the training diffusion loss,
smoothed over 20 logs; dots: the held-out diffusion loss.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="LABEL=RUN_DIR, in training order")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--smooth", type=int, default=20)
    args = ap.parse_args()
    import matplotlib  # after parsing the flags: --help works without it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    base = 0
    for spec in args.runs:
        label, _, run = spec.partition("=")
        rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines() if line]
        train = [r for r in rows if "diff_loss" in r]
        val = [r for r in rows if "val_diff_loss" in r]
        ys = [r["diff_loss"] for r in train]
        k = args.smooth
        smooth = [sum(ys[max(0, i - k + 1) : i + 1]) / len(ys[max(0, i - k + 1) : i + 1]) for i in range(len(ys))]
        (line,) = ax.plot([(base + r["tokens"]) / 1e6 for r in train], smooth, lw=1, label=label)
        ax.plot(
            [(base + r["tokens"]) / 1e6 for r in val], [r["val_diff_loss"] for r in val], "o", color=line.get_color()
        )
        base += train[-1]["tokens"]
    ax.set_xlabel("tokens trained in all (M)")
    ax.set_ylabel("diffusion loss (nats, noised positions)")
    ax.set_ylim(1.8, 4.0)
    ax.set_title("training (lines, smoothed) and held-out (dots) diffusion loss")
    ax.legend(fontsize=8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110, bbox_inches="tight")
    print(f"{base / 1e6:.0f}M tokens in all -> {args.out}")


if __name__ == "__main__":
    main()
