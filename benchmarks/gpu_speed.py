"""GPU speed of one fill, one decoder step and many editors at once, side by side in one run.

    python benchmarks/gpu_speed.py --device cuda                       # bundled-size random model (preset "small")
    python benchmarks/gpu_speed.py --device cuda --model DIR           # a real checkpoint
    python benchmarks/gpu_speed.py --device cuda --preset small --hidden 1024 --layers 16   # another shape
    python benchmarks/gpu_speed.py --device cpu --quick                # proves the script works (no GPU)

Runs from a plain checkout: when `canvas_ls` is not installed it makes a shim that maps the working
tree's model/ and server/ onto canvas_ls.model / canvas_ls.server. Needs torch and transformers; the
multi-client figure also needs msgspec (skipped with a note when missing). Nothing is downloaded.

The model. `--model DIR` loads a checkpoint through model.loading. Otherwise a DiffusionGemma-shaped model
with random weights is built on the meta device and materialised directly on --device (no CPU copy, so
large shapes work): its shape is a training preset from model/training/module.py (`small` = the bundled size,
~46M parameters, 8 x 512, vocabulary 12,288) with any field overridden by flags (--hidden, --layers,
--heads, --kv-heads, --head-dim, --intermediate, --experts, --top-k, --moe-intermediate, --vocab,
--window). Random weights make the *speed* representative, not the text; its tokenizer is the small BPE
the tests use (ids above its vocabulary decode to nothing).

Figures (all medians over --reps after warm-up; CUDA timings synchronise the device):
  generate_ms        transformers' own `model.generate()` for one 256-token canvas at most 16 denoising steps
                     (its default entropy-bound sampler and adaptive stopping), prompt encode included: the
                     reference implementation.
  fill_ms            our `Infiller.fill` end to end for one hole on a 256-token canvas, at most 16 steps
                     (default sampler settings): tokenisation, prompt K/V, the denoising loop, decoding.
  fill_speedup       generate_ms / fill_ms.
  step_eager_ms      one decoder forward pass (256-token canvas, self-conditioning logits, prompt K/V of the
                     test document), eager PyTorch.
  step_graph_ms      (CUDA only) the same pass replayed as a CUDA graph captured with torch.cuda.graphs on
                     static inputs; with the MoE experts kernel that captured (grouped_mm first, then
                     batched_mm), and the largest |graph - eager| logit difference as a check.
  step_floor_ms      the pass's hardware floor: max(bytes it must move / memory bandwidth, FLOPs / peak
                     FLOP/s). Bytes: every decoder weight (the tied embedding is read whole by the LM head;
                     all experts are hit by 256 tokens), the prompt K/V, the fp32 logits written and the
                     self-conditioning logits read. FLOPs: 2 x tokens x (dense weights + top_k/num_experts
                     of the expert weights) + attention. Peaks: the nominal datasheet values for known GPUs
                     (H100 SXM 3.35 TB/s, H200 4.8 TB/s, both 989 dense bf16 TFLOP/s), else those measured
                     here (a large copy, a large matmul); both floors are written to the JSON.
  step_vs_floor      step time / floor (graph if captured, else eager).
  clients_1_p50_ms   fill latency through the engine (server/engine.py, on a thread of this process, over
                     its Unix socket) with one editor filling back to back.
  clients_8_p50_ms,  the same with 8 editors (8 connections, 8 threads) filling concurrently, distinct
  clients_8_p95_ms   documents; the engine batches them into shared forward passes.

Targets (checked and written to the JSON, with pass/fail):
  fill_ms <= 25 ms per 256-token canvas;  fill_speedup >= 20x generate();  step_vs_floor <= 15;
  clients_8_p95_ms <= 2 x clients_1_p50_ms.

Output: JSON (--out, default benchmarks/results/gpu_speed.json, or gpu_speed_quick.json with --quick) and a
PNG next to it (matplotlib Agg): times per canvas, the step against its floor, latency under load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _import_canvas_ls() -> None:
    """Make canvas_ls.model / canvas_ls.server importable from the working tree if not installed."""
    try:
        import canvas_ls.model.infill  # noqa: F401
        import canvas_ls.server  # noqa: F401

        return
    except ImportError:
        pass
    shim = Path(tempfile.mkdtemp(prefix="canvas-shim-")) / "canvas_ls"
    shim.mkdir()
    (shim / "__init__.py").write_text("")
    (shim / "model").symlink_to(ROOT / "model")
    (shim / "server").symlink_to(ROOT / "server")
    sys.path.insert(0, str(shim.parent))
    for name in [m for m in sys.modules if m == "canvas_ls" or m.startswith("canvas_ls.")]:
        del sys.modules[name]


_import_canvas_ls()

import torch  # noqa: E402

from canvas_ls.model.infill import Infiller  # noqa: E402
from canvas_ls.model.interface import FillRequest  # noqa: E402
from canvas_ls.model.kv import cache_arg  # noqa: E402
from canvas_ls.model.settings import SamplerSettings  # noqa: E402

DOC = '''import math
from dataclasses import dataclass


@dataclass
class Point:
    x: float
    y: float

    def distance(self, other: "Point") -> float:
        """Euclidean distance between two points."""
        dx = self.x - other.x
        dy = self.y - other.y
        return math.sqrt(dx * dx + dy * dy)


def nearest(points: list[Point], target: Point) -> Point | None:
    """The point closest to target, or None for an empty list."""
    best = None
    best_d = math.inf
    for p in points:
        d = p.distance(target)
        if d < best_d:
            best, best_d = p, d
    return best


def centroid(points: list[Point]) -> Point:
    n = len(points)
    
    return Point(sx / n, sy / n)


def bounding_box(points: list[Point]) -> tuple[Point, Point]:
    xs = [p.x for p in points]
    ys = [p.y for p in points]
    return Point(min(xs), min(ys)), Point(max(xs), max(ys))


if __name__ == "__main__":
    pts = [Point(0, 0), Point(3, 4), Point(1, 1)]
    print(nearest(pts, Point(2, 2)), centroid(pts), bounding_box(pts))
'''
HOLE = DOC.index("    \n    return Point(sx") + 4  # the missing sums in centroid()

NOMINAL = {  # (memory bandwidth B/s, dense bf16/fp16 FLOP/s) from the datasheets
    "H100": (3.35e12, 989e12),
    "H200": (4.8e12, 989e12),
    "A100": (2.0e12, 312e12),
    "L4": (0.3e12, 121e12),
}

TARGETS = {"fill_ms": 25.0, "fill_speedup": 20.0, "step_vs_floor": 15.0, "clients_p95_over_p50": 2.0}


# ---- timing helpers ---------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, reps: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


# ---- the model ------------------------------------------------------------------------------------


TOKENIZER_VOCAB = 1024


def _tokenizer_dir() -> Path:
    """The small BPE of the tests (train once into a temp dir)."""
    from canvas_ls.model.tiny import _tokenizer_corpus
    from canvas_ls.model.tokenizer import save_for_transformers, train_bpe

    out = Path(tempfile.mkdtemp(prefix="canvas-tok-"))
    save_for_transformers(train_bpe(_tokenizer_corpus(), TOKENIZER_VOCAB), out)
    return out


def random_model(args, device: torch.device, dtype: torch.dtype):
    """A DiffusionGemma of the preset's shape (flags override), built on meta, materialised on the device."""
    from transformers import AutoTokenizer, DiffusionGemmaForBlockDiffusion  # seconds to import: only here

    from canvas_ls.model import special_tokens as st
    from canvas_ls.model.loading import LoadedModel
    from canvas_ls.model.training.module import preset

    overrides = {
        k: v
        for k, v in {
            "hidden_size": args.hidden,
            "num_layers": args.layers,
            "num_heads": args.heads,
            "num_kv_heads": args.kv_heads,
            "head_dim": args.head_dim,
            "global_head_dim": args.head_dim,
            "intermediate_size": args.intermediate,
            "num_experts": args.experts,
            "top_k_experts": args.top_k,
            "moe_intermediate_size": args.moe_intermediate,
            "vocab_size": args.vocab,
            "sliding_window": args.window,
        }.items()
        if v is not None
    }
    if "num_layers" in overrides:
        overrides["layer_types"] = []  # re-derive the 3 sliding : 1 full pattern
    if args.kv_heads is not None:
        overrides.setdefault("num_global_kv_heads", max(1, args.kv_heads // 2))
    cfg = preset(args.preset, canvas_length=args.canvas, **overrides)
    if cfg.vocab_size < TOKENIZER_VOCAB:  # the tokenizer's ids must exist in the model
        cfg = preset(args.preset, canvas_length=args.canvas, **{**overrides, "vocab_size": TOKENIZER_VOCAB})
    hf_cfg = cfg.to_hf_config()
    with torch.device("meta"):
        model = DiffusionGemmaForBlockDiffusion(hf_cfg)
    model.to_empty(device=device)
    with torch.no_grad():
        model.init_weights()  # parameters and the rotary/scale buffers
        for name, buf in model.named_buffers():
            if name.endswith("layer_scalar"):
                buf.fill_(1.0)  # not covered by _init_weights for encoder layers
    model.to(dtype).eval()
    tok = AutoTokenizer.from_pretrained(_tokenizer_dir(), local_files_only=True)
    lm = LoadedModel(
        model=model,
        tokenizer=tok,
        path=Path(f"random-{args.preset}"),
        device=device,
        dtype=dtype,
        noise="uniform",
        mask_id=None,
        pad_id=st.PAD_ID,
        eos_id=st.EOS_ID,
        bos_id=st.BOS_ID,
        canvas_length=args.canvas,
        vocab_size=cfg.vocab_size,
        random_weights=True,
    )
    return lm, cfg.to_dict()


def load(args, device: torch.device, dtype_name: str):
    from canvas_ls.model.loading import load_model, resolve_dtype

    if args.model:
        lm = load_model(args.model, device=str(device), dtype=dtype_name)
        return lm, {"checkpoint": str(lm.path)}
    return random_model(args, device, resolve_dtype(dtype_name, device))


# ---- measurements --------------------------------------------------------------------------------------


def measure_generate(lm, infiller: Infiller, args, device) -> dict:
    model = lm.model
    ids = infiller.prompt_ids(DOC[:HOLE])
    input_ids = torch.tensor([ids], device=device)
    passes = []
    counter = {"n": 0}
    hook = model.model.decoder.register_forward_pre_hook(lambda *a, **k: counter.__setitem__("n", counter["n"] + 1))

    def run():
        counter["n"] = 0
        with torch.inference_mode():
            model.generate(input_ids, max_new_tokens=model.config.canvas_length, max_denoising_steps=args.steps)
        passes.append(counter["n"])

    try:
        times = timed(run, device, args.reps)
    finally:
        hook.remove()
    return {
        "generate_ms": 1e3 * statistics.median(times),
        "generate_passes": statistics.median(passes[1:] or passes),
        "generate_canvas": int(model.config.canvas_length),
        "generate_all_ms": [1e3 * t for t in times],
    }


def fill_request(max_tokens: int, text: str = DOC, hole: int = HOLE, **settings) -> FillRequest:
    return FillRequest(text, holes=((hole, hole),), max_tokens=max_tokens, settings=SamplerSettings(**settings))


def measure_fill(infiller: Infiller, args, device) -> dict:
    slots = args.canvas - infiller.min_suffix_tokens  # slots + the suffix's start fill exactly one 256 canvas
    req = fill_request(slots, max_steps=args.steps)
    results = []
    times = timed(lambda: results.append(infiller.fill(req)), device, args.reps)
    r = results[-1]
    return {
        "fill_ms": 1e3 * statistics.median(times),
        "fill_passes": r.forward_passes,
        "fill_canvas": r.canvas_length,
        "fill_slots": r.slots[0],
        "fill_all_ms": [1e3 * t for t in times],
    }


def step_inputs(infiller: Infiller, canvas_len: int):
    """The decoder inputs the Infiller builds for one row: cache, positions, a canvas, sc logits."""
    lm = infiller.loaded
    state = infiller.prefix.encode(infiller.prompt_ids(DOC[:HOLE]))
    cache, masks, lengths = infiller.prefix.decoder_cache([state], canvas_len, [canvas_len])
    positions = lengths[:, None] + torch.arange(canvas_len, device=lm.device)[None]
    gen = torch.Generator(device=lm.device).manual_seed(0)
    canvas = torch.randint(0, min(lm.vocab_size, 1024), (1, canvas_len), device=lm.device, generator=gen)
    with torch.inference_mode():
        sc = lm.model(
            **cache_arg(lm.model, cache),
            decoder_input_ids=canvas,
            decoder_position_ids=positions,
            decoder_attention_mask=masks,
        ).logits
    return state, cache, masks, positions, canvas, sc


def measure_step(infiller: Infiller, args, device) -> dict:
    lm = infiller.loaded
    model = lm.model
    state, cache, masks, positions, canvas, sc = step_inputs(infiller, args.canvas)

    def step(c, s):
        return model(
            **cache_arg(model, cache),
            decoder_input_ids=c,
            self_conditioning_logits=s,
            decoder_position_ids=positions,
            decoder_attention_mask=masks,
        ).logits

    with torch.inference_mode():
        times = timed(lambda: step(canvas, sc), device, max(args.reps * 4, 5), warmup=2)
        eager_out = step(canvas, sc)
    out = {"step_eager_ms": 1e3 * statistics.median(times), "step_eager_all_ms": [1e3 * t for t in times]}
    out.update(step_floor(model, lm, len(state), args.canvas, sc, device))
    if device.type == "cuda":
        explicit = explicit_masks(infiller, len(state), args.canvas)

        def step_explicit(c, s):  # the same pass with the masks given, so no mask building runs inside
            return model(
                **cache_arg(model, cache),
                decoder_input_ids=c,
                self_conditioning_logits=s,
                decoder_position_ids=positions,
                decoder_attention_mask=explicit,
            ).logits

        out.update(
            measure_graph(
                model,
                [("as Infiller calls it", step), ("explicit masks", step_explicit)],
                canvas,
                sc,
                eager_out,
                args,
                device,
            )
        )
    else:
        out["step_graph_ms"] = None
        out["step_graph_note"] = "CUDA graphs need a CUDA device"
    best = out.get("step_graph_ms") or out["step_eager_ms"]
    out["step_vs_floor"] = best / out["step_floor_ms"] if out["step_floor_ms"] else None
    return out


def explicit_masks(infiller: Infiller, prompt_len: int, canvas_len: int) -> dict:
    """All-visible boolean masks shaped as model.kv.padding_masks builds them for batches."""
    from canvas_ls.model.kv import padding_masks

    enc = infiller.prefix
    kv_lens = {}
    for sliding in set(enc.is_sliding):
        vis = min(prompt_len, enc.window - 1) if sliding else prompt_len
        kv_lens["sliding_attention" if sliding else "full_attention"] = (vis, [vis])
    return padding_masks(kv_lens, canvas_len, [canvas_len], infiller.loaded.device)


def measure_graph(model, steps, canvas, sc, eager_out, args, device) -> dict:
    """Capture one decoder step as a CUDA graph: each experts kernel x each way of passing masks."""
    tried = []
    try:
        current = model.get_experts_implementation().get("", None)
    except Exception:
        current = None
    impls = [current] + [i for i in ("grouped_mm", "batched_mm") if i != current]
    for impl, (how, step) in [(i, st) for i in impls for st in steps]:
        try:
            if impl is not None and impl != current:
                model.set_experts_implementation(impl)
            static_c, static_s = canvas.clone(), sc.clone()
            with torch.inference_mode():
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(3):
                        step(static_c, static_s)
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    static_out = step(static_c, static_s)
                graph.replay()
                torch.cuda.synchronize()
                diff = float((static_out.float() - eager_out.float()).abs().max())
                times = timed(graph.replay, device, max(args.reps * 10, 20), warmup=3)
            return {
                "step_graph_ms": 1e3 * statistics.median(times),
                "step_graph_experts": impl,
                "step_graph_masks": how,
                "step_graph_max_abs_diff": diff,
                "step_graph_failures": tried,
            }
        except Exception as exc:  # capture is fragile (syncs, dynamic shapes): record why and go on
            tried.append(f"{impl}, {how}: {type(exc).__name__}: {str(exc)[:300]}")
            with contextlib.suppress(Exception):
                torch.cuda.synchronize()
        finally:
            if current is not None:
                try:
                    model.set_experts_implementation(current)
                except Exception:
                    pass
    return {"step_graph_ms": None, "step_graph_note": "capture failed", "step_graph_failures": tried}


def peaks(device: torch.device, dtype: torch.dtype, quick: bool) -> dict:
    """Measured copy bandwidth and matmul throughput on this device (achievable, not nominal)."""
    n = (16 if quick else 256) * 2**20 // 4
    a = torch.empty(n, dtype=torch.float32, device=device).uniform_()
    b = torch.empty_like(a)
    t = statistics.median(timed(lambda: b.copy_(a), device, 5, warmup=2))
    bw = 2 * a.numel() * 4 / t
    m = 1024 if (quick or device.type != "cuda") else 8192
    x = torch.randn(m, m, device=device, dtype=dtype)
    y = torch.randn(m, m, device=device, dtype=dtype)
    t = statistics.median(timed(lambda: x @ y, device, 5, warmup=2))
    return {"measured_bandwidth_Bps": bw, "measured_flops": 2 * m**3 / t}


def step_floor(model, lm, prompt_len: int, canvas: int, sc: torch.Tensor, device) -> dict:
    text = model.config.text_config
    dec = model.model.decoder
    elt = next(model.parameters()).element_size()
    seen, weight_bytes, dense, expert = set(), 0, 0, 0
    for name, p in list(dec.named_parameters()) + list(model.lm_head.named_parameters()):
        if id(p) in seen:
            continue
        seen.add(id(p))
        weight_bytes += p.numel() * p.element_size()
        if ".experts." in name:
            expert += p.numel()
        elif "embed_tokens" not in name:  # the lookup reads 256 rows; the LM head (tied) is counted below
            dense += p.numel()
    vocab, hidden = int(text.vocab_size), int(text.hidden_size)
    dense += vocab * hidden  # the LM head matmul
    kv_bytes = sum(2 * k.numel() * k.element_size() for k in lm_kv(lm, prompt_len))
    io_bytes = 2 * canvas * vocab * 4  # fp32 logits out, self-conditioning logits in
    total_bytes = weight_bytes + kv_bytes + io_bytes
    frac = text.top_k_experts / text.num_experts
    heads, layers = int(text.num_attention_heads), int(text.num_hidden_layers)
    head_dim = int(getattr(text, "head_dim", hidden // heads))
    attn = 4 * canvas * (prompt_len + canvas) * heads * head_dim * layers
    flops = 2 * canvas * (dense + frac * expert) + attn
    out = {"step_bytes": total_bytes, "step_flops": flops, "weight_bytes": weight_bytes, "bytes_per_element": elt}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    nominal = next((v for k, v in NOMINAL.items() if k in name), None)
    measured = peaks(device, next(model.parameters()).dtype, QUICK)
    out.update(measured)
    out["floor_measured_ms"] = 1e3 * max(
        total_bytes / measured["measured_bandwidth_Bps"], flops / measured["measured_flops"]
    )
    if nominal:
        out["floor_nominal_ms"] = 1e3 * max(total_bytes / nominal[0], flops / nominal[1])
        out["nominal_peaks"] = {"bandwidth_Bps": nominal[0], "flops": nominal[1]}
    out["step_floor_ms"] = out.get("floor_nominal_ms", out["floor_measured_ms"])
    out["step_floor_basis"] = "nominal" if nominal else "measured"
    return out


def lm_kv(lm, prompt_len):
    """The prompt K/V tensors a decoder step reads (rebuilt cheaply for their sizes)."""
    text = lm.model.config.text_config
    out = []
    for i, kind in enumerate(text.layer_types):
        cfg = text.per_layer_config[i] if hasattr(text, "per_layer_config") else text
        n = min(prompt_len, text.sliding_window - 1) if kind == "sliding_attention" else prompt_len
        out.append(torch.empty(1, int(cfg.num_key_value_heads), n, int(cfg.head_dim), dtype=lm.dtype, device="meta"))
    return out


def client_docs(n: int) -> list[tuple[str, int]]:
    """n distinct documents (renamed identifiers), each with the hole in centroid()."""
    docs = []
    for i in range(n):
        text = DOC.replace("Point", f"Point{i}").replace("points", f"points_{i}")
        docs.append((text, text.index("    \n    return Point") + 4))
    return docs


def measure_clients(infiller: Infiller, args, device) -> dict:
    try:
        from canvas_ls.server.engine.client import RemoteFiller
        from canvas_ls.server.engine.config import EngineConfig
        from canvas_ls.server.engine.process import EngineThread
    except ImportError as exc:
        return {"clients_note": f"skipped: {exc}"}
    run_dir = tempfile.mkdtemp(prefix="cls-bench-", dir="/tmp")
    config = EngineConfig(run_dir=run_dir, idle_minutes=0, batch_window_ms=args.batch_window_ms, max_batch=16)
    key = ["benchmark", str(os.getpid())]
    docs = client_docs(args.clients)
    settings = dict(max_steps=args.steps)

    def one_client(client, doc_index, fills, lat):
        text, hole = docs[doc_index]
        for _ in range(fills):
            t0 = time.perf_counter()
            client.fill(fill_request(args.client_slots, text, hole, **settings))
            lat.append(time.perf_counter() - t0)

    with EngineThread(config, infiller, key=key) as et:
        solo = RemoteFiller.attach(et.socket, key)
        one_client(solo, 0, 1, [])  # warm-up
        single: list[float] = []
        one_client(solo, 0, args.client_fills, single)
        solo.close()
        clients = [RemoteFiller.attach(et.socket, key) for _ in range(args.clients)]
        for i, c in enumerate(clients):
            one_client(c, i, 1, [])  # each document's prompt K/V once, as an editor would have it
        lats: list[list[float]] = [[] for _ in clients]
        batches_before = len(et.engine.scheduler.stats.batch_sizes)
        threads = [
            threading.Thread(target=one_client, args=(c, i, args.client_fills, lats[i])) for i, c in enumerate(clients)
        ]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        sizes = et.engine.scheduler.stats.batch_sizes[batches_before:]
        for c in clients:
            c.close()
    many = [x for l in lats for x in l]
    return {
        "clients": args.clients,
        "client_fills": args.client_fills,
        "client_slots": args.client_slots,
        "clients_1_p50_ms": 1e3 * pct(single, 0.5),
        "clients_1_p95_ms": 1e3 * pct(single, 0.95),
        "clients_8_p50_ms": 1e3 * pct(many, 0.5),
        "clients_8_p95_ms": 1e3 * pct(many, 0.95),
        "clients_wall_s": wall,
        "clients_mean_batch": statistics.mean(sizes) if sizes else None,
        "clients_batches": len(sizes),
    }


# ---- report --------------------------------------------------------------------------------------


def check_targets(f: dict) -> dict:
    out = {}
    if f.get("fill_ms") is not None:
        out["fill_ms<=25"] = f["fill_ms"] <= TARGETS["fill_ms"]
    if f.get("fill_speedup") is not None:
        out["fill_speedup>=20"] = f["fill_speedup"] >= TARGETS["fill_speedup"]
    if f.get("step_vs_floor") is not None:
        out["step_vs_floor<=15"] = f["step_vs_floor"] <= TARGETS["step_vs_floor"]
    if f.get("clients_8_p95_ms") is not None:
        out["clients_8_p95<=2x_clients_1_p50"] = (
            f["clients_8_p95_ms"] <= TARGETS["clients_p95_over_p50"] * f["clients_1_p50_ms"]
        )
    return out


def plot(f: dict, path: Path, title: str) -> None:
    import matplotlib  # the `bench` extra, slow to import: only to draw the plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    ax = axes[0]
    names, vals = ["generate()", "Infiller.fill"], [f.get("generate_ms"), f.get("fill_ms")]
    ax.bar(names, [v or 0 for v in vals], color=["#999", "#1f77b4"])
    ax.axhline(TARGETS["fill_ms"], color="red", ls="--", label="target 25 ms")
    ax.set_yscale("log")
    ax.set_ylabel("ms per 256-token canvas (<= 16 steps)")
    ax.set_title(f"one canvas: {f.get('fill_speedup', 0):.1f}x generate()")
    ax.legend()
    ax = axes[1]
    names = ["eager", "CUDA graph", "floor"]
    vals = [f.get("step_eager_ms"), f.get("step_graph_ms"), f.get("step_floor_ms")]
    ax.bar(names, [v or 0 for v in vals], color=["#1f77b4", "#2ca02c", "#555"])
    if f.get("step_floor_ms"):
        ax.axhline(15 * f["step_floor_ms"], color="red", ls="--", label="target 15x floor")
        ax.legend()
    ax.set_yscale("log")
    ax.set_ylabel("ms per decoder step")
    ax.set_title(f"one step: {f.get('step_vs_floor') or float('nan'):.1f}x its floor")
    ax = axes[2]
    if f.get("clients_1_p50_ms") is not None:
        names = ["1 editor p50", "1 editor p95", f"{f['clients']} editors p50", f"{f['clients']} editors p95"]
        vals = [f["clients_1_p50_ms"], f["clients_1_p95_ms"], f["clients_8_p50_ms"], f["clients_8_p95_ms"]]
        ax.bar(names, vals, color=["#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78"])
        ax.axhline(2 * f["clients_1_p50_ms"], color="red", ls="--", label="target: p95 <= 2x single p50")
        ax.legend()
        ax.tick_params(axis="x", rotation=15)
    ax.set_ylabel("fill latency through the engine (ms)")
    ax.set_title("editors at once")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


QUICK = False


def main(argv: list[str] | None = None) -> int:
    global QUICK
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="checkpoint directory (default: a random model of --preset's shape)")
    ap.add_argument(
        "--preset",
        default=None,
        help="model/training/module.py preset for the random model (default small; toy with --quick)",
    )
    for flag in (
        "hidden",
        "layers",
        "heads",
        "kv-heads",
        "head-dim",
        "intermediate",
        "experts",
        "top-k",
        "moe-intermediate",
        "vocab",
        "window",
    ):
        ap.add_argument(f"--{flag}", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--canvas", type=int, default=256)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions (default 10; 2 with --quick)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--client-fills", type=int, default=None, help="fills per editor (default 12; 2 with --quick)")
    ap.add_argument("--client-slots", type=int, default=64, help="hole slots per editor fill (a multi-line completion)")
    ap.add_argument("--batch-window-ms", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true", help="small and few: proves the script runs (CPU)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: generate,fill,step,clients")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    QUICK = args.quick
    args.preset = args.preset or ("toy" if args.quick else "small")
    args.reps = args.reps or (2 if args.quick else 10)
    args.client_fills = args.client_fills or (2 if args.quick else 12)
    out = args.out or ROOT / "benchmarks" / "results" / ("gpu_speed_quick.json" if args.quick else "gpu_speed.json")
    skip = set(filter(None, args.skip.split(",")))

    from canvas_ls.model.loading import resolve_device

    device = resolve_device(args.device)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    lm, shape = load(args, device, args.dtype)
    infiller = Infiller(lm)
    params = sum(p.numel() for p in lm.model.parameters())
    meta = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "dtype": str(lm.dtype).removeprefix("torch."),
        "model": lm.describe(),
        "parameters": params,
        "shape": shape,
        "canvas": args.canvas,
        "steps": args.steps,
        "reps": args.reps,
        "quick": args.quick,
        "build_s": time.perf_counter() - t0,
    }
    try:
        import transformers

        meta["transformers"] = transformers.__version__
        meta["experts_implementation"] = lm.model.get_experts_implementation().get("")
    except Exception:
        pass
    print(f"model: {lm.describe()}, {params / 1e6:.1f}M parameters, on {meta['device']}", file=sys.stderr)

    figures: dict = {}
    parts = [
        ("fill", measure_fill),
        ("generate", lambda i, a, d: measure_generate(lm, i, a, d)),
        ("step", measure_step),
        ("clients", measure_clients),
    ]
    for name, fn in parts:
        if name in skip:
            continue
        t = time.perf_counter()
        try:
            figures.update(fn(infiller, args, device))
        except Exception as exc:  # one broken part must not lose the others' numbers
            figures[f"{name}_error"] = f"{type(exc).__name__}: {exc}"
            print(f"{name}: FAILED {exc}", file=sys.stderr)
        print(f"{name}: {time.perf_counter() - t:.1f}s", file=sys.stderr)
    if figures.get("generate_ms") and figures.get("fill_ms"):
        figures["fill_speedup"] = figures["generate_ms"] / figures["fill_ms"]
    report = {"meta": meta, "figures": figures, "targets": TARGETS, "met": check_targets(figures)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    title = f"{meta['model']} | {meta['device']} | {meta['dtype']} | torch {meta['torch']}"
    try:
        plot(figures, out.with_suffix(".png"), title)
    except Exception as exc:
        print(f"plot failed: {exc}", file=sys.stderr)
    keys = [
        "generate_ms",
        "fill_ms",
        "fill_speedup",
        "fill_passes",
        "generate_passes",
        "step_eager_ms",
        "step_graph_ms",
        "step_floor_ms",
        "step_vs_floor",
        "clients_1_p50_ms",
        "clients_8_p50_ms",
        "clients_8_p95_ms",
        "clients_mean_batch",
    ]
    for k in keys:
        v = figures.get(k)
        print(f"  {k:>20}: {v:.3f}" if isinstance(v, float) else f"  {k:>20}: {v}")
    print(f"  targets met: {report['met']}")
    print(f"wrote {out} and {out.with_suffix('.png')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
