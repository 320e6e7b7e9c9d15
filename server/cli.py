"""canvas-ls command line: serve (LSP over stdio), fill, check, demo.

stdout belongs to the protocol under `serve`; logs always go to stderr (and --log-file).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

from . import __version__


def _setup_logging(level: str, log_file: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=level.upper(), handlers=handlers, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pygls").setLevel(logging.WARNING)


def cmd_serve(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level, args.log_file)
    from .lsp import server
    from .settings import parse_settings

    if args.model:
        server.settings, _ = parse_settings({"modelPath": args.model})
    server.start_io()
    return 0


def _settings(args: argparse.Namespace):
    from .settings import parse_settings

    raw = {"device": args.device, "dtype": args.dtype, "maxSteps": args.steps, "seed": args.seed}
    if args.model:
        raw["modelPath"] = args.model
    settings, problems = parse_settings(raw)
    if problems:
        raise SystemExit("canvas-ls: " + "; ".join(problems))
    return settings


_POS = re.compile(r"^(\d+):(\d+)$")
_RANGE = re.compile(r"^(\d+):(\d+)-(\d+):(\d+)$")


def _offset(text: str, line: int, col: int) -> int:
    """1-based line and column (in characters) -> offset."""
    from .positions import to_offset

    return to_offset(text, line - 1, col - 1, "utf-32")


def cmd_fill(args: argparse.Namespace) -> int:
    _setup_logging("warning" if not args.verbose else "info", None)
    from canvas_ls.model.loading import ModelLoadError
    from canvas_ls.server.syntax import language_for

    from . import pipeline
    from .model_host import ModelHost

    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(f"canvas-ls: cannot read {path}: {exc}")
    settings = _settings(args)
    lang = language_for(None, str(path))
    try:
        infiller = ModelHost().get(settings)
    except ModelLoadError as exc:
        raise SystemExit(f"canvas-ls: {exc}")

    on_step = None
    if args.show_steps:
        def on_step(event):
            texts = event.render(0) if event.render else ()
            print(f"--- step {event.step}: {event.committed}/{event.slots} slots committed", file=sys.stderr)
            for i, s in enumerate(texts):
                print(("" if len(texts) == 1 else f"[hole {i + 1}] ") + s, file=sys.stderr)

    try:
        if args.at:
            m = _POS.match(args.at)
            if not m:
                raise pipeline.BadRequest(f"--at takes LINE:COL, got {args.at!r}")
            outcome = pipeline.complete_at(infiller, text, _offset(text, int(m[1]), int(m[2])), lang, settings, on_step=on_step)
        elif args.range:
            spans = []
            for r in args.range:
                m = _RANGE.match(r)
                if not m:
                    raise pipeline.BadRequest(f"--range takes L1:C1-L2:C2, got {r!r}")
                spans.append((_offset(text, int(m[1]), int(m[2])), _offset(text, int(m[3]), int(m[4]))))
            outcome = pipeline.fill_selections(infiller, text, spans, lang, settings, on_step=on_step)
        else:
            line = int(args.body)
            outcome = pipeline.fill_body(infiller, text, _offset(text, line, 1) if line > 0 else -1, lang, settings, on_step=on_step)
    except pipeline.BadRequest as exc:
        raise SystemExit(f"canvas-ls: {exc}")

    r = outcome.result
    if args.json:
        from .positions import to_position

        spans = []
        for e in outcome.edits:
            a, b = to_position(text, e.start, "utf-32"), to_position(text, e.end, "utf-32")
            spans.append({"start": {"line": a[0] + 1, "col": a[1] + 1}, "end": {"line": b[0] + 1, "col": b[1] + 1}, "text": e.text})
        print(json.dumps({
            "file": str(path), "mode": outcome.mode, "spans": spans, "note": outcome.note,
            "seconds": round(r.seconds, 4) if r else None, "steps": r.forward_passes if r else 0,
            "tokens": r.tokens if r else 0, "tokensPerPass": round(r.tokens_per_pass, 3) if r else 0,
            "canvasLength": r.canvas_length if r else None, "candidates": r.candidates if r else 0,
            "repairs": r.repairs if r else 0, "model": infiller.loaded.describe(),
        }, indent=2))
        return 0
    out = text
    for e in sorted(outcome.edits, key=lambda e: e.start, reverse=True):
        out = out[: e.start] + e.text + out[e.end :]
    sys.stdout.write(out)
    if not outcome.edits:
        print(f"canvas-ls: no fill: {outcome.note}", file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Report versions, device, model and grammars; exit 1 if something is wrong."""
    import platform

    import torch
    import transformers

    from canvas_ls.model.loading import ModelLoadError, check_model_dir, default_model_path, load_model
    from canvas_ls.server.syntax import SUPPORTED, parse

    from .model_host import model_dir_for

    ok = True
    print(f"canvas-ls {__version__}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}")
    cuda = torch.cuda.is_available()
    print(f"cuda: {'yes, ' + torch.cuda.get_device_name(0) if cuda else 'no (CPU only)'}")
    settings = _settings(args)
    path = model_dir_for(settings)
    bundled = default_model_path()
    print(f"model: {path}" + (" (bundled)" if bundled and path == bundled else " (tiny random-weight demo model: output is noise)" if not settings.modelPath and not bundled else ""))
    problems = check_model_dir(path)
    if problems:
        ok = False
        for p in problems:
            print(f"  PROBLEM: {p}")
    else:
        try:
            t0 = time.perf_counter()
            lm = load_model(path, device=settings.device, dtype=settings.dtype)
            n = sum(p.numel() for p in lm.model.parameters())
            print(f"  loaded in {time.perf_counter() - t0:.1f}s: {n / 1e6:.1f}M parameters, {lm.describe()}, canvas {lm.canvas_length}")
        except ModelLoadError as exc:
            ok = False
            print(f"  PROBLEM: {exc}")
    for lang in SUPPORTED:
        try:
            tree = parse("x", lang)
            print(f"grammar {lang}: ok")
        except Exception as exc:  # a broken grammar wheel should be named, not crash the check
            ok = False
            print(f"grammar {lang}: PROBLEM {exc}")
    print("status: ok" if ok else "status: PROBLEMS FOUND (see above)")
    return 0 if ok else 1


DEMO = '''def mean(values):
    """Arithmetic mean of a non-empty list."""
    total = 0
    for v in values:
        total += v
    return 

print(mean([1, 2, 3]))
'''


def cmd_demo(args: argparse.Namespace) -> int:
    """Fill a hole in a small example file, showing the canvas converge step by step."""
    from canvas_ls.model.loading import default_model_path

    example = Path(args.file) if args.file else Path(os.environ.get("TMPDIR", "/tmp")) / "canvas-ls-demo.py"
    if not args.file:
        example.write_text(DEMO)
    text = example.read_text()
    line_no = next(i for i, l in enumerate(text.splitlines(), 1) if l.rstrip().endswith("return")) if not args.at else None
    at = args.at or f"{line_no}:{len(text.splitlines()[line_no - 1]) + 1}"
    if not default_model_path() and not args.model:
        print("canvas-ls demo: no trained model is bundled yet, so this uses a tiny RANDOM-WEIGHT model.\n"
              "Its output is noise: the demo shows the machinery (canvas, steps, post-processing), not quality.\n", file=sys.stderr)
    print(f"canvas-ls demo: filling {example} at {at}\n{text}", file=sys.stderr)
    ns = argparse.Namespace(file=str(example), at=at, range=None, body=None, json=False, show_steps=True, verbose=False,
                            model=args.model, device=args.device, dtype=args.dtype, steps=args.steps, seed=args.seed)
    print("=== filled file ===", file=sys.stderr)
    return cmd_fill(ns)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="canvas-ls", description="Code infilling with a text-diffusion model, over LSP or the command line.")
    parser.add_argument("--version", action="version", version=f"canvas-ls {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def model_args(p):
        p.add_argument("--model", help="checkpoint directory (default: bundled, else a tiny random demo model)")
        p.add_argument("--device", default="auto")
        p.add_argument("--dtype", default="auto")
        p.add_argument("--steps", type=int, default=16, help="most denoising steps")
        p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("serve", help="speak LSP over stdio")
    p.add_argument("--model", help="checkpoint directory (overridden by the client's modelPath setting)")
    p.add_argument("--log-file")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--stdio", action="store_true", help="accepted for clients that add it; stdio is the only transport")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("fill", help="fill a hole in a file and print the result")
    p.add_argument("file")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--at", metavar="LINE:COL", help="complete at this position (1-based)")
    where.add_argument("--range", metavar="L1:C1-L2:C2", action="append", help="fill this range; repeat for several, filled jointly")
    where.add_argument("--body", metavar="LINE", help="regenerate the body of the function around this line")
    p.add_argument("--json", action="store_true", help="print the filled spans with timing, steps and tokens per pass")
    p.add_argument("--show-steps", action="store_true", help="print the canvas at each step (stderr)")
    p.add_argument("-v", "--verbose", action="store_true")
    model_args(p)
    p.set_defaults(func=cmd_fill)

    p = sub.add_parser("check", help="report device, model, grammars and versions")
    model_args(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("demo", help="fill an example file, showing each denoising step")
    p.add_argument("file", nargs="?")
    p.add_argument("--at", metavar="LINE:COL")
    model_args(p)
    p.set_defaults(func=cmd_demo)

    from .engine import add_engine_arguments, engine_main

    p = sub.add_parser("engine", help="run the shared model engine: one process per model serving every language server")
    add_engine_arguments(p)
    p.set_defaults(func=engine_main)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
