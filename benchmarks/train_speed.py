"""Throughput of the training step (canvas_ls.model.training) and of the data pipeline.

    python benchmarks/train_speed.py --out build/train/bench --configs small:64,small:96 --compile
    python benchmarks/train_speed.py --data build/train/data --out build/train/bench --configs small:64,medium:48
    python benchmarks/train_speed.py --out /tmp/bench --configs tiny:4 --device cpu --steps 2 --warmup 1   # proves it runs

For each `config:batch` (a preset of model/training/module.py; batch defaults to the recipe's): a model of
that shape, AdamW, and a synthetic batch with the shapes and statistics of a real one; times
`--steps` optimizer steps after `--warmup` (eager, or `--compile`d like `train.py --compile`). Reports
ms/step, tokens/s, peak GPU memory and MFU against an H100's dense bf16 peak. With `--data` (a directory
written by `python -m canvas_ls.model.training.data`), the vocabulary comes from it and the data
pipeline is timed too: batches per second of one worker process (make_batch), to compare with the
model's tokens/s at the DataLoader's worker count. Writes OUT/bench.json (or --json).

Runs from a plain checkout: when `canvas_ls` is not installed it maps the working tree's model/ onto
canvas_ls.model. Needs the training extra (numpy) besides torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
H100_BF16_FLOPS = 989e12  # dense peak, for MFU


def _import_canvas_ls() -> None:
    try:
        import canvas_ls.model.training  # noqa: F401

        return
    except ImportError:
        pass
    shim = Path(tempfile.mkdtemp(prefix="canvas-shim-")) / "canvas_ls"
    shim.mkdir()
    (shim / "__init__.py").write_text("")
    (shim / "model").symlink_to(ROOT / "model")
    sys.path.insert(0, str(shim.parent))
    for name in [m for m in sys.modules if m == "canvas_ls" or m.startswith("canvas_ls.")]:
        del sys.modules[name]


_import_canvas_ls()

import torch  # noqa: E402

from canvas_ls.model.training.data import Objective  # noqa: E402
from canvas_ls.model.training.module import count_parameters, flops_per_token, preset, training_losses  # noqa: E402
from canvas_ls.model.training.train import (  # noqa: E402
    RECIPE_DEFAULTS,
    autocast,
    build_model,
    log,
    make_objective,
    make_optimizer,
    pick_device,
    pipeline_tok_s,
    resolve_recipe,
    to_device,
)


def default_recipe(config: str) -> dict:
    """The recipe `train.py --config CONFIG` would use with no other flags."""
    return resolve_recipe(argparse.Namespace(**{k: None for k in RECIPE_DEFAULTS} | {"config": config}), None)


def synthetic_batch(obj: Objective, B: int, vocab: int, device: torch.device, seed: int = 0) -> dict:
    """Shapes and statistics of a real batch without data: for measuring the model step alone."""
    g = torch.Generator().manual_seed(seed)
    P, C, K = obj.prefix_len, obj.canvas_len, obj.ar_samples
    start = torch.randint(0, P // 8, (B,), generator=g)
    enc = torch.randint(4, vocab, (B, P), generator=g)
    enc = torch.where(torch.arange(P)[None] < start[:, None], 0, enc)
    region = torch.arange(C)[None] < torch.randint(8, C // 2, (B, 1), generator=g)
    t = 1 - torch.rand(B, generator=g)
    mask = region & (torch.rand(B, C, generator=g) < t[:, None])
    target = torch.randint(4, vocab, (B, C), generator=g)
    b = {
        "enc_ids": enc,
        "start": start,
        "ar_pos": torch.sort(torch.rand(B, P, generator=g).argsort(1)[:, :K], 1).values,
        "ar_tgt": torch.randint(4, vocab, (B, K), generator=g),
        "canvas": torch.where(mask, torch.randint(0, vocab, (B, C), generator=g), target),
        "target": target,
        "loss_mask": mask,
        "region": region,
        "canvas_len": torch.full((B,), C),
        "t": t,
        "sc": (torch.rand(B, generator=g) < 0.5).float(),
        "sc_temp": 0.4 + 0.6 * torch.rand(B, generator=g),
    }
    return to_device(b, device)


def bench(args: argparse.Namespace) -> list[dict]:
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    vocab = None
    if args.data:
        vocab = int(json.loads((Path(args.data) / "manifest.json").read_text())["vocab_size"])
    results = []
    for spec in args.configs.split(","):
        name, _, bs = spec.partition(":")
        recipe = default_recipe(name)
        B = int(bs) if bs else recipe["batch"]
        model = build_model(recipe, vocab or preset(name).vocab_size, device)
        obj = make_objective(recipe, model.cfg.canvas_length)
        opt = make_optimizer(model, recipe, device)
        fn = torch.compile(training_losses) if args.compile else training_losses
        batch = synthetic_batch(obj, B, model.cfg.vocab_size, device)
        row = {
            "config": name,
            "batch": B,
            "prefix": obj.prefix_len,
            "canvas": obj.canvas_len,
            "compile": bool(args.compile),
            "params_m": round(count_parameters(model)["total"] / 1e6, 2),
            "device": str(device),
        }
        try:
            t0 = time.time()
            for i in range(args.warmup + args.steps):
                if i == args.warmup:
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                        torch.cuda.reset_peak_memory_stats()
                    row["warmup_s"] = round(time.time() - t0, 1)
                    t1 = time.time()
                with autocast(device):
                    out = fn(model, batch, ar_weight=0.5, loss_weighting="token")
                out["loss"].backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = (time.time() - t1) / args.steps
            tps = B * (obj.prefix_len + obj.canvas_len) / dt
            row.update(
                {"ms_step": round(dt * 1e3, 1), "tok_s": round(tps), "loss": round(float(out["loss"].detach()), 3)}
            )
            if device.type == "cuda":
                row["peak_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
                row["mfu_h100"] = round(
                    tps * flops_per_token(model.cfg, obj.prefix_len, obj.canvas_len) / H100_BF16_FLOPS, 3
                )
        except torch.OutOfMemoryError:
            row["error"] = "OOM"
        except Exception as e:  # noqa: BLE001 - report and go on to the next configuration
            row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
        results.append(row)
        log(json.dumps(row))
        del model, opt, fn, batch
        if device.type == "cuda":
            torch.cuda.empty_cache()
        torch._dynamo.reset()
    if args.data:  # the data pipeline: batches per second per worker process
        obj = make_objective(default_recipe(results[0]["config"]), results[0]["canvas"])
        B = results[0]["batch"]
        tok_s = pipeline_tok_s(Path(args.data), obj, B, seed=0, seconds=1.0)
        results.append(
            {
                "data_pipeline": f"batch {B} x ({obj.prefix_len}+{obj.canvas_len})",
                "s_per_batch_per_worker": round(B * (obj.prefix_len + obj.canvas_len) / tok_s, 3),
                "tok_s_per_worker": round(tok_s),
            }
        )
    print(f"{'config':<10} {'batch':>5} {'params(M)':>9} {'ms/step':>8} {'tok/s':>10} {'peak GB':>8} {'MFU':>6}  note")
    for r in results:
        if "config" in r:
            print(
                f"{r['config']:<10} {r['batch']:>5} {r['params_m']:>9} {r.get('ms_step', '-'):>8} {r.get('tok_s', '-'):>10} "
                f"{r.get('peak_gb', '-'):>8} {r.get('mfu_h100', '-'):>6}  {r.get('error', '')}"
            )
        else:
            print(
                f"data pipeline {r['data_pipeline']}: {r['s_per_batch_per_worker']} s/batch/worker = {r['tok_s_per_worker']} tok/s per worker"
            )
    out = Path(args.json) if args.json else Path(args.out) / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python benchmarks/train_speed.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="directory for bench.json")
    ap.add_argument("--data", type=Path, help="prepared data: its vocabulary size, and time the data pipeline too")
    ap.add_argument(
        "--configs", default="small:32,small:64,small:96", help="config:batch,... (presets of model/training/module.py)"
    )
    ap.add_argument("--steps", type=int, default=10, help="timed optimizer steps per configuration")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the training step")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--json", type=Path, help="results file (default OUT/bench.json)")
    bench(ap.parse_args(argv))


if __name__ == "__main__":
    main()
