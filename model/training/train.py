"""Train the canvas-ls diffusion coder: resumable segments, metrics, plots, HF export.

    python -m canvas_ls.model.training.train --data DATA --out RUN --config small --steps 20000 --minutes 8.5 --compile
    python -m canvas_ls.model.training.train --data DATA --out RUN --resume --minutes 8.5 --compile   # next segment
    python -m canvas_ls.model.training.train --data DATA --out RUN --resume --steps-this-run 0 --export RUN/export

The throughput benchmark of the training step is benchmarks/train_speed.py.

A run directory holds checkpoint.pt (model, optimizer, step, data position, RNG), metrics.jsonl,
loss.png and run.json. Batch i of a run is a pure function of (seed, i) (see data.make_batch), so a
resumed run continues the exact same data stream and, with no dropout, the exact same computation.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import sys
import tarfile
import time
from pathlib import Path

import torch

from .data import BatchStream, Objective, Shard, make_batch
from .export import export_run, load_weights, save_weights
from .module import CanvasLM, count_parameters, param_groups, preset, training_losses

# Recipe settings live in the checkpoint; on --resume they come from there (explicit flags must agree).
RECIPE_DEFAULTS = {
    "config": "small",
    "noise": "uniform",
    "steps": 1000,
    "batch": None,  # per config below
    "prefix_len": None,  # per config below
    "canvas_len": None,  # config's canvas_length
    "lr": None,  # per config below
    "warmup": None,  # min(500, steps // 20)
    "min_lr_ratio": 0.1,
    "weight_decay": 0.1,
    "beta2": 0.95,
    "grad_clip": 1.0,
    "ar_weight": 0.5,
    "loss_weighting": "token",
    "cont_prob": 0.2,
    "sc_prob": 0.5,
    "seed": 0,
}
PER_CONFIG = {  # batch, prefix length, peak learning rate
    "tiny": (8, 48, 3e-3),
    "toy": (16, 192, 3e-3),
    "small": (64, 768, 2e-3),
    "compact": (64, 768, 2e-3),
    "small-e1": (64, 768, 2e-3),
    "medium": (48, 768, 1.5e-3),
}


def log(msg: str) -> None:
    print(f"[train {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_recipe(args: argparse.Namespace, saved: dict | None) -> dict:
    """Recipe values: saved ones on resume (explicit flags must match, except --steps), else flags/defaults."""
    if saved is not None:
        recipe = dict(saved)
        for k in RECIPE_DEFAULTS:
            v = getattr(args, k)
            if v is None or v == recipe.get(k):
                continue
            if k == "steps":
                log(f"note: total steps {recipe[k]} -> {v}: the cosine schedule stretches from here on")
                recipe[k] = v
            else:
                raise SystemExit(
                    f"--{k.replace('_', '-')} {v} differs from the checkpoint's {recipe.get(k)}; drop it to resume"
                )
        return recipe
    recipe = {k: (getattr(args, k) if getattr(args, k) is not None else d) for k, d in RECIPE_DEFAULTS.items()}
    b, p, lr = PER_CONFIG.get(recipe["config"], PER_CONFIG["small"])
    recipe["batch"] = recipe["batch"] or b
    recipe["prefix_len"] = recipe["prefix_len"] or p
    recipe["lr"] = recipe["lr"] or lr
    recipe["warmup"] = recipe["warmup"] if recipe["warmup"] is not None else min(500, max(1, recipe["steps"] // 20))
    return recipe


def make_objective(recipe: dict, canvas_len: int) -> Objective:
    return Objective(
        prefix_len=recipe["prefix_len"],
        canvas_len=canvas_len,
        noise=recipe["noise"],
        cont_prob=recipe["cont_prob"],
        sc_prob=recipe["sc_prob"],
    )


FIT_FIRST, FIT_WINDOW = 3, 20  # --fit-steps times steps FIT_FIRST .. FIT_FIRST + FIT_WINDOW (the first compile)
FIT_MARGIN = 0.97  # ... and plans for this share of the time left (evals, the checkpoint)


def fitted_steps(step: int, seconds_per_step: float, seconds_left: float) -> int:
    """The schedule length whose last step ends as the time does: `step` done, then as many more as
    FIT_MARGIN of `seconds_left` holds at `seconds_per_step`."""
    return step + max(1, int(FIT_MARGIN * seconds_left / max(seconds_per_step, 1e-9)))


def pipeline_tok_s(data_dir: Path, obj, batch: int, seed: int, seconds: float = 2.0) -> float:
    """Tokens/s one data-loader worker makes (batches built here, in this process, for ~`seconds`)."""
    shard = Shard(data_dir, "train")
    t0, n = time.perf_counter(), 0
    while n < 2 or time.perf_counter() - t0 < seconds:
        make_batch(shard, obj, batch, seed=seed + 777, index=n)
        n += 1
    return n * batch * (obj.prefix_len + obj.canvas_len) / (time.perf_counter() - t0)


def lr_at(step: int, recipe: dict) -> float:
    """Linear warmup, then cosine from lr to lr * min_lr_ratio at `steps`."""
    lr, warm, total = recipe["lr"], recipe["warmup"], recipe["steps"]
    if step < warm:
        return lr * (step + 1) / warm
    frac = min(1.0, (step - warm) / max(1, total - warm))
    return lr * (recipe["min_lr_ratio"] + (1 - recipe["min_lr_ratio"]) * 0.5 * (1 + math.cos(math.pi * frac)))


def build_model(recipe: dict, vocab_size: int, device: torch.device) -> CanvasLM:
    overrides = {"vocab_size": vocab_size}
    if recipe.get("canvas_len"):
        overrides["canvas_length"] = recipe["canvas_len"]
    cfg = preset(recipe["config"], **overrides)
    torch.manual_seed(recipe["seed"])
    return CanvasLM(cfg).to(device)


def make_optimizer(model: CanvasLM, recipe: dict, device: torch.device) -> torch.optim.Optimizer:
    extra = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(
        param_groups(model, recipe["weight_decay"]), lr=recipe["lr"], betas=(0.9, recipe["beta2"]), eps=1e-8, **extra
    )


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}


def np_batch_to_torch(b: dict) -> dict:
    return {k: torch.from_numpy(v) for k, v in b.items() if hasattr(v, "dtype") and v.dtype.kind in "biuf"}


# ---- checkpoints -------------------------------------------------------------------------------


def save_checkpoint(run: Path, model, opt, state: dict) -> None:
    tmp = run / "checkpoint.pt.tmp"
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
            **state,
        },
        tmp,
    )
    os.replace(tmp, run / "checkpoint.pt")


def load_checkpoint(run: Path, device: torch.device) -> dict | None:
    path = run / "checkpoint.pt"
    if not path.exists():
        return None
    return torch.load(path, map_location=device, weights_only=False)


# ---- evaluation, metrics, plots ---------------------------------------------------------------------


@torch.no_grad()
def evaluate(model, batches: list[dict], recipe: dict, device: torch.device) -> dict[str, float]:
    model.eval()
    sums: dict[str, float] = {}
    for b in batches:
        with autocast(device):
            out = training_losses(
                model, to_device(b, device), ar_weight=recipe["ar_weight"], loss_weighting=recipe["loss_weighting"]
            )
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    model.train()
    return {f"val_{k}": v / len(batches) for k, v in sums.items()}


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def append_metrics(run: Path, row: dict) -> None:
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def plot_losses(run: Path) -> None:
    import matplotlib  # the `train` extra, slow to import: only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    train = [r for r in rows if "diff_loss" in r]
    val = [r for r in rows if "val_diff_loss" in r]
    if not train:
        return
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    tok = [r["tokens"] / 1e6 for r in train]
    ax[0].plot(tok, [r["diff_loss"] for r in train], label="train diffusion", lw=1)
    ax[0].plot(tok, [r["ar_loss"] for r in train], label="train AR", lw=1)
    if val:
        vt = [r["tokens"] / 1e6 for r in val]
        ax[0].plot(vt, [r["val_diff_loss"] for r in val], "o-", label="val diffusion")
        ax[0].plot(vt, [r["val_ar_loss"] for r in val], "s-", label="val AR")
    ax[0].set_xlabel("tokens (M)")
    ax[0].set_ylabel("cross-entropy (nats)")
    ax[0].legend()
    ax[0].grid(alpha=0.3)
    ax[1].plot(tok, [r["diff_acc"] for r in train], label="train noised-token accuracy", lw=1)
    if val:
        ax[1].plot(vt, [r["val_diff_acc"] for r in val], "o-", label="val")
    ax[1].set_xlabel("tokens (M)")
    ax[1].legend()
    ax[1].grid(alpha=0.3)
    fig.suptitle(run.name)
    fig.tight_layout()
    fig.savefig(run / "loss.png", dpi=110)
    plt.close(fig)


# ---- export and hand-off --------------------------------------------------------------------------


def data_summary(data_dir: Path) -> dict:
    """What a model card needs from the data manifest (kept in run.json, so a run dir is self-contained)."""
    m = json.loads((data_dir / "manifest.json").read_text())
    return {
        "python": m.get("python"),
        "train_files": m["splits"]["train"]["files"],
        "train_tokens": m["splits"]["train"]["tokens"],
        "val_files": m["splits"]["val"]["files"],
        "bytes_per_token": m.get("bytes_per_token"),
        "dropped": m.get("dropped"),
        "licences": dict(list(m["licences"].items())[:25]),
    }


def write_run_json(
    run: Path, recipe: dict, model: CanvasLM, obj: Objective, state: dict, data: dict, throughput: dict | None = None
) -> dict:
    info = {
        "recipe": recipe,
        "model": model.cfg.to_dict(),
        "objective": obj.to_dict(),
        "parameters": count_parameters(model),
        "state": {k: state[k] for k in ("step", "tokens", "seconds", "last_eval")},
        "data": data,
        "throughput": throughput or {},  # this run's: model and data-pipeline tokens/s, the fitted schedule
    }
    (run / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


# What one GPU command can return: at most 8 files of 16 MiB, 64 MiB together (less a log file's share).
PACK_MAX_BYTES = 64 * 2**20 - 2_000_000


def pack(
    run: Path, dest: Path, export_dir: Path | None, part_bytes: int = 15_000_000, max_parts: int = 7
) -> list[Path]:
    """Split what a GPU command must bring back into <= max_parts files of <= part_bytes:
    run.json, metrics.jsonl, loss.png, bench.json, tokenizer/ and the export (if any) or the bf16 weights.
    Reassemble with: cat PARTS/run.tar.part-* | tar -x -C RUN"""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("run.json", "metrics.jsonl", "loss.png", "bench.json", "tokenizer"):
            if (run / name).exists():
                tar.add(run / name, arcname=name)
        if export_dir is not None and export_dir.exists():
            tar.add(export_dir, arcname="export")
        elif (run / "weights.safetensors").exists():
            tar.add(run / "weights.safetensors", arcname="weights.safetensors")
    data = buf.getvalue()
    n = -(-len(data) // part_bytes)
    if n > max_parts or len(data) > PACK_MAX_BYTES:
        raise SystemExit(
            f"pack is {len(data) / 1e6:.0f} MB ({n} parts of {part_bytes / 1e6:.0f} MB): more than {max_parts} parts or {PACK_MAX_BYTES / 1e6:.0f} MB"
        )
    dest.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(n):
        p = dest / f"run.tar.part-{i:02d}"
        p.write_bytes(data[i * part_bytes : (i + 1) * part_bytes])
        parts.append(p)
    log(f"packed {len(data) / 1e6:.1f} MB into {n} parts in {dest}")
    return parts


# ---- training -----------------------------------------------------------------------------------


def train(args: argparse.Namespace) -> dict:
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    run = Path(args.out)
    run.mkdir(parents=True, exist_ok=True)
    data_dir = Path(args.data)
    vocab = int(json.loads((data_dir / "manifest.json").read_text())["vocab_size"])

    ckpt = load_checkpoint(run, device) if args.resume else None
    if args.resume and ckpt is None:
        log(f"no checkpoint in {run}: starting fresh")
    if not args.resume and (run / "checkpoint.pt").exists():
        raise SystemExit(f"{run} already holds a checkpoint: pass --resume, or choose another --out")
    recipe = resolve_recipe(args, ckpt["recipe"] if ckpt else None)
    if args.fit_steps and (args.resume or not (args.minutes or args.until)):
        raise SystemExit("--fit-steps sizes a fresh run's schedule to --minutes or --until")
    if args.fit_steps and recipe["warmup"] <= FIT_FIRST + FIT_WINDOW:
        raise SystemExit(f"--fit-steps measures steps {FIT_FIRST}..{FIT_FIRST + FIT_WINDOW}: give --warmup above that")
    model = build_model(recipe, vocab, device)
    bf16_bytes = 2 * count_parameters(model)["total"]
    if args.pack and bf16_bytes > PACK_MAX_BYTES - 4_000_000:  # fail before the GPU time is spent
        raise SystemExit(
            f"--pack: {recipe['config']}'s bf16 weights are {bf16_bytes / 1e6:.0f} MB; with the tokenizer and "
            f"metrics they would not fit the {PACK_MAX_BYTES / 2**20:.0f} MiB a GPU command returns"
        )
    if ckpt is None and args.init_from:
        init = load_weights(args.init_from)
        if init.cfg != model.cfg:
            raise SystemExit(f"--init-from {args.init_from}: its config differs from --config {recipe['config']}")
        model.load_state_dict(init.state_dict())
        log(f"initialised from {args.init_from}")
    opt = make_optimizer(model, recipe, device)
    state = {"step": 0, "tokens": 0, "seconds": 0.0, "last_eval": None}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        state = {k: ckpt[k] for k in state}
        log(f"resumed {run} at step {state['step']} ({state['tokens'] / 1e6:.1f}M tokens)")
    obj = make_objective(recipe, model.cfg.canvas_length)
    data_info = data_summary(data_dir)
    write_run_json(run, recipe, model, obj, state, data_info)
    if not (run / "tokenizer" / "tokenizer.json").exists():
        shutil.copytree(data_dir / "tokenizer", run / "tokenizer", dirs_exist_ok=True)
    n_params = count_parameters(model)
    tokens_per_step = recipe["batch"] * (obj.prefix_len + obj.canvas_len)
    log(
        f"{recipe['config']}: {n_params['total'] / 1e6:.1f}M parameters ({n_params['non_embedding'] / 1e6:.1f}M non-embedding), "
        f"batch {recipe['batch']} x ({obj.prefix_len} prefix + {obj.canvas_len} canvas) = {tokens_per_step} tokens/step, "
        f"{recipe['noise']} noise, device {device}"
    )

    loss_fn = training_losses
    if args.compile:
        loss_fn = torch.compile(training_losses)
    val_batches = []
    if args.eval_every:
        vshard = Shard(data_dir, "val")
        val_batches = [
            np_batch_to_torch(make_batch(vshard, obj, recipe["batch"], seed=10_000 + recipe["seed"], index=i))
            for i in range(args.eval_batches)
        ]

    end_step = (
        recipe["steps"] if args.steps_this_run is None else min(recipe["steps"], state["step"] + args.steps_this_run)
    )
    if args.fit_steps:
        end_step = 1 << 40  # until the first steps have been timed and the schedule sized from them
    workers = (
        args.workers
        if args.workers is not None
        else (min(8, max(1, (os.cpu_count() or 2) - 2)) if device.type == "cuda" else 0)
    )
    loader = None
    if state["step"] < end_step:
        loader = iter(
            torch.utils.data.DataLoader(
                BatchStream(data_dir, "train", obj, recipe["batch"], recipe["seed"], first=state["step"]),
                batch_size=None,
                num_workers=workers,
                pin_memory=device.type == "cuda",
                prefetch_factor=4 if workers else None,
            )
        )
    throughput = {"workers": workers}
    if state["step"] < end_step:
        # What the issue asks to see in the first seconds: can the data keep up with the model?
        throughput["pipeline_tok_s_per_worker"] = round(pipeline_tok_s(data_dir, obj, recipe["batch"], recipe["seed"]))
        log(
            f"data pipeline: {throughput['pipeline_tok_s_per_worker'] / 1e3:.0f}K tokens/s per worker x "
            f"{max(workers, 1)} worker(s)"
        )
    t_start = time.time()
    seconds_before = state["seconds"]
    deadlines = [t for t in (t_start + args.minutes * 60 if args.minutes else None, args.until) if t]
    deadline = min(deadlines) if deadlines else None
    fit_t0, first_step = None, state["step"]
    acc = {"loss": 0.0, "diff_loss": 0.0, "ar_loss": 0.0, "diff_acc": 0.0}
    acc_t = {k: torch.zeros((), device=device) for k in acc}
    n_acc, t_log, tok_log = 0, time.time(), state["tokens"]
    last_step_loss = None
    model.train()
    stop_reason = "steps"
    while state["step"] < end_step:
        if deadline is not None and time.time() > deadline:
            stop_reason = "minutes"
            break
        step = state["step"]
        batch = to_device(next(loader), device)
        lr = lr_at(step, recipe)
        for g in opt.param_groups:
            g["lr"] = lr
        try:
            with autocast(device):
                out = loss_fn(model, batch, ar_weight=recipe["ar_weight"], loss_weighting=recipe["loss_weighting"])
        except Exception as exc:  # a compile that fails must not cost a GPU window: go on eager
            if loss_fn is training_losses:
                raise
            log(f"torch.compile of the training step failed ({type(exc).__name__}: {str(exc)[:200]}): eager from here")
            loss_fn = training_losses
            opt.zero_grad(set_to_none=True)
            with autocast(device):
                out = loss_fn(model, batch, ar_weight=recipe["ar_weight"], loss_weighting=recipe["loss_weighting"])
        out["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), recipe["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        for k in acc:
            acc_t[k] += out[k].detach()
        n_acc += 1
        state["step"] += 1
        state["tokens"] += tokens_per_step
        if args.fit_steps and state["step"] in (FIT_FIRST, FIT_FIRST + FIT_WINDOW):
            float(out["loss"].detach())  # wait for the device: the steps so far have run, not just been queued
            if state["step"] == FIT_FIRST:
                fit_t0 = time.time()
            else:
                per_step = (time.time() - fit_t0) / FIT_WINDOW
                recipe["steps"] = end_step = fitted_steps(state["step"], per_step, deadline - time.time())
                throughput["model_tok_s"] = round(tokens_per_step / per_step)
                throughput["fitted_steps"] = recipe["steps"]
                log(
                    f"model: {tokens_per_step / per_step / 1e3:.0f}K tokens/s ({1000 * per_step:.0f} ms/step): "
                    f"schedule sized to {recipe['steps']} steps, {recipe['steps'] * tokens_per_step / 1e6:.0f}M tokens, "
                    f"to end in {(deadline - time.time()) / 60:.1f} min"
                )
        if args.log_every and (state["step"] % args.log_every == 0 or state["step"] == end_step):
            vals = {k: float(v) / n_acc for k, v in acc_t.items()}
            now = time.time()
            tps = (state["tokens"] - tok_log) / max(now - t_log, 1e-9)
            row = {
                "step": state["step"],
                "tokens": state["tokens"],
                **vals,
                "lr": lr,
                "grad_norm": float(grad_norm),
                "tok_s": tps,
                "elapsed": now - t_start,
            }
            append_metrics(run, row)
            log(
                f"step {state['step']}/{recipe['steps']} loss {vals['loss']:.3f} diff {vals['diff_loss']:.3f} (acc {vals['diff_acc']:.3f}) "
                f"AR {vals['ar_loss']:.3f} lr {lr:.2e} |g| {float(grad_norm):.2f} {tps / 1e3:.1f}K tok/s"
            )
            last_step_loss = vals["loss"]
            acc_t = {k: torch.zeros((), device=device) for k in acc}
            n_acc, t_log, tok_log = 0, time.time(), state["tokens"]
        if args.eval_every and val_batches and state["step"] % args.eval_every == 0:
            if args.fit_steps and fit_t0 is not None and state["step"] > FIT_FIRST + FIT_WINDOW:
                # Sized again from the steps so far, evaluations included: the cosine then ends with the
                # time, not short of it (a few percent of change, so the learning rate barely moves).
                per_step = (time.time() - fit_t0) / (state["step"] - FIT_FIRST)
                recipe["steps"] = end_step = max(
                    state["step"] + 1, fitted_steps(state["step"], per_step, deadline - time.time())
                )
                throughput["fitted_steps"] = recipe["steps"]
            ev = evaluate(model, val_batches, recipe, device)
            state["last_eval"] = {"step": state["step"], **ev}
            append_metrics(run, {"step": state["step"], "tokens": state["tokens"], **ev})
            log(
                f"eval step {state['step']}: diffusion {ev['val_diff_loss']:.3f} (acc {ev['val_diff_acc']:.3f}) AR {ev['val_ar_loss']:.3f}"
            )
            plot_losses(run)
        if args.ckpt_every and state["step"] % args.ckpt_every == 0:
            state["seconds"] = seconds_before + time.time() - t_start
            save_checkpoint(run, model, opt, {**state, "recipe": recipe, "model_config": model.cfg.to_dict()})
    state["seconds"] = seconds_before + time.time() - t_start
    if state["step"] > first_step:
        ran = (state["step"] - first_step) * tokens_per_step / max(time.time() - t_start, 1e-9)
        throughput.setdefault("model_tok_s", round(ran))  # compile and evals included: a lower bound
    if val_batches and (state["last_eval"] is None or state["last_eval"]["step"] != state["step"]):
        ev = evaluate(model, val_batches, recipe, device)
        state["last_eval"] = {"step": state["step"], **ev}
        append_metrics(run, {"step": state["step"], "tokens": state["tokens"], **ev})
        log(
            f"eval step {state['step']}: diffusion {ev['val_diff_loss']:.3f} (acc {ev['val_diff_acc']:.3f}) AR {ev['val_ar_loss']:.3f}"
        )
    save_checkpoint(run, model, opt, {**state, "recipe": recipe, "model_config": model.cfg.to_dict()})
    save_weights(run, model)
    write_run_json(run, recipe, model, obj, state, data_info, throughput)
    if (run / "metrics.jsonl").exists():
        plot_losses(run)
    log(
        f"stopped ({stop_reason}) at step {state['step']}/{recipe['steps']}, {state['tokens'] / 1e6:.1f}M tokens; checkpoint {run / 'checkpoint.pt'}"
    )
    export_dir = Path(args.export) if args.export else None
    if export_dir is not None:
        try:
            export_run(run, export_dir, model=model, dtype=args.export_dtype, shard_size=args.shard_size)
        except Exception as exc:  # e.g. another transformers on the GPU image: the weights still come back
            log(f"export failed ({type(exc).__name__}: {str(exc)[:300]}): packing the bf16 weights instead")
            shutil.rmtree(export_dir, ignore_errors=True)
            export_dir = None
    if args.pack:
        pack(run, Path(args.pack), export_dir)
    return {"state": state, "recipe": recipe, "last_loss": last_step_loss, "stop": stop_reason}


# ---- CLI ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m canvas_ls.model.training.train", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data", type=Path, required=True, help="directory written by `python -m canvas_ls.model.training.data`"
    )
    ap.add_argument("--out", type=Path, required=True, help="run directory (checkpoint, metrics, plots)")
    r = ap.add_argument_group("recipe (stored in the checkpoint; on --resume taken from it)")
    r.add_argument("--config", choices=sorted(PER_CONFIG), help="model size preset (default small)")
    r.add_argument("--noise", choices=["uniform", "absorbing"])
    r.add_argument("--steps", type=int, help="total optimizer steps; sets the LR schedule (default 1000)")
    r.add_argument("--batch", type=int, help="rows per step")
    r.add_argument("--prefix-len", type=int, help="encoder length P: <bos> + up to P-1 prefix tokens")
    r.add_argument("--canvas-len", type=int, help="canvas length C (default: the config's canvas_length)")
    r.add_argument("--lr", type=float)
    r.add_argument("--warmup", type=int)
    r.add_argument("--min-lr-ratio", type=float)
    r.add_argument("--weight-decay", type=float)
    r.add_argument("--beta2", type=float)
    r.add_argument("--grad-clip", type=float)
    r.add_argument("--ar-weight", type=float, help="weight of the encoder's autoregressive loss (default 0.5)")
    r.add_argument("--loss-weighting", choices=["token", "elbo"])
    r.add_argument("--cont-prob", type=float, help="share of continuation examples (default 0.2)")
    r.add_argument("--sc-prob", type=float, help="share of rows trained with self-conditioning (default 0.5)")
    r.add_argument("--seed", type=int)
    c = ap.add_argument_group("this run")
    c.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    c.add_argument(
        "--init-from",
        type=Path,
        help="start from weights.safetensors of a run or an exported HF checkpoint "
        "directory (fresh optimizer: a warm restart, e.g. in a later GPU session)",
    )
    c.add_argument("--minutes", type=float, help="stop cleanly (and checkpoint) after this many minutes")
    c.add_argument(
        "--until",
        type=float,
        help="stop cleanly by this time (seconds since the epoch, as `date +%%s` prints): one command's "
        "budget shared with the data preparation before it",
    )
    c.add_argument(
        "--fit-steps",
        action="store_true",
        help="size the LR schedule (--steps) to the time left: from the tokens/s of the first steps after "
        f"the compile ({FIT_FIRST}..{FIT_FIRST + FIT_WINDOW}; --warmup must be longer), so the cosine ends "
        "when --minutes/--until does. Not with --resume",
    )
    c.add_argument("--steps-this-run", type=int, help="stop after this many steps in this run")
    c.add_argument("--compile", action="store_true", help="torch.compile the training step")
    c.add_argument("--device", default="auto")
    c.add_argument("--threads", type=int, help="torch CPU threads")
    c.add_argument("--workers", type=int, help="data loader processes (default: 0 on CPU, up to 8 on CUDA)")
    c.add_argument("--log-every", type=int, default=10)
    c.add_argument("--eval-every", type=int, default=200, help="validation every N steps (0: never)")
    c.add_argument("--eval-batches", type=int, default=8)
    c.add_argument("--ckpt-every", type=int, default=0, help="also checkpoint every N steps (always at the end)")
    c.add_argument("--export", type=Path, help="write the HF checkpoint here when the run stops")
    c.add_argument("--export-dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    c.add_argument("--shard-size", default="15MB")
    c.add_argument(
        "--pack",
        type=Path,
        help="when the run stops, split run.json, metrics, plot, tokenizer and the export (or "
        "the bf16 weights) into <= 8 parts of <= 15 MB here (for $OUT on the GPU machine)",
    )
    return ap


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # data workers are processes already
    train(args)


if __name__ == "__main__":
    main()
