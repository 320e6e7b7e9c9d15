"""canvas-ls command line: serve (LSP over stdio), fill (and repair), check, demo.

stdout belongs to the protocol under `serve`; logs always go to stderr (and --log-file).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

from canvas_ls.model import default_model_path
from canvas_ls.model.interface import ModelLoadError

from . import __version__, pipeline, repair
from .engine.process import add_engine_arguments, engine_main
from .fill_report import fill_json
from .logs import setup_logging
from .lsp import server
from .memory import one_arena
from .model_host import ModelHost, model_dir_for
from .positions import line_starts, to_position
from .settings import parse_settings
from .syntax import SUPPORTED, language_for, parse


def cmd_serve(args: argparse.Namespace) -> int:
    one_arena()  # before any thread allocates: a closed document's memory goes back (server/memory.py)
    setup_logging(args.log_level or "warning", args.log_file)
    server.cli_log_level = args.log_level  # the command line's level wins over the logLevel setting
    if args.model:
        server.settings, _ = parse_settings({"modelPath": args.model})
    server.start_io()
    return 0


def _settings(args: argparse.Namespace):
    """Server settings from the command line: the shortcut flags, then every --set NAME=VALUE.

    Invalid values stop the command (exit 2) with the reason; nothing falls back silently."""
    raw: dict = {}
    for flag, name in (
        ("device", "device"),
        ("dtype", "dtype"),
        ("steps", "maxSteps"),
        ("seed", "seed"),
        ("model", "modelPath"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            raw[name] = value
    if getattr(args, "steps", None) is not None:
        raw["lineSteps"] = args.steps  # --steps caps every fill, a line's too
    for item in args.set or ():
        name, _, value = item.partition("=")
        raw[name.strip()] = _setting_value(value)
    settings, problems = parse_settings(raw)
    if problems:
        args.parser.error("invalid setting: " + "; ".join(problems))
    return settings


def _setting_value(text: str):
    """--set values are JSON where they parse (numbers, true, [8, 16]), else plain strings (paths)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


_POS = re.compile(r"^(\d+):(\d+)$")
_RANGE = re.compile(r"^(\d+):(\d+)-(\d+):(\d+)$")


def _position_arg(value: str) -> tuple[int, int]:
    m = _POS.match(value)
    if not m:
        raise argparse.ArgumentTypeError(f"expected LINE:COL (1-based), got {value!r}")
    return int(m[1]), int(m[2])


def _range_arg(value: str) -> tuple[int, int, int, int]:
    m = _RANGE.match(value)
    if not m:
        raise argparse.ArgumentTypeError(f"expected L1:C1-L2:C2 (1-based), got {value!r}")
    return int(m[1]), int(m[2]), int(m[3]), int(m[4])


def _line_arg(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected a line number (1-based), got {value!r}")
    return int(value)


class _Positions:
    """1-based LINE:COL (columns in characters) <-> offsets, with errors in the same terms."""

    def __init__(self, text: str, parser: argparse.ArgumentParser) -> None:
        self.text, self.parser, self.starts = text, parser, line_starts(text)

    def line_length(self, line: int) -> int:
        begin = self.starts[line - 1]
        end = self.starts[line] - 1 if line < len(self.starts) else len(self.text)
        return len(self.text[begin:end].rstrip("\r"))

    def offset(self, line: int, col: int, what: str) -> int:
        if line < 1 or col < 1:
            self.parser.error(f"{what} {line}:{col}: lines and columns start at 1")
        if line > len(self.starts):
            self.parser.error(
                f"{what} {line}:{col}: line {line} is past the end of the file ({len(self.starts)} lines)"
            )
        length = self.line_length(line)
        if col > length + 1:
            self.parser.error(
                f"{what} {line}:{col}: column {col} is past the end of line {line} ({length} characters, so columns 1..{length + 1})"
            )
        return self.starts[line - 1] + col - 1

    def position(self, offset: int) -> dict:
        line, col = to_position(self.text, offset, "utf-32", self.starts)
        return {"line": line + 1, "col": col + 1}


def _read_document(args: argparse.Namespace) -> tuple[str, str]:
    """(text, display name). Bytes are decoded as they are: CRLF stays CRLF (no universal newlines)."""
    if args.file == "-":
        data, name = sys.stdin.buffer.read(), "<stdin>"
    else:
        try:
            data, name = Path(args.file).read_bytes(), args.file
        except OSError as exc:
            args.parser.error(f"cannot read {args.file}: {exc.strerror or exc}")
    try:
        return data.decode("utf-8"), name
    except UnicodeDecodeError as exc:
        args.parser.error(f"{name} is not UTF-8 text: {exc}")


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _printable(text: str) -> str:
    """Step renderings may hold any token: show control characters escaped, never raw."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


def cmd_fill(args: argparse.Namespace) -> int:
    setup_logging("info" if args.verbose else "warning")
    # Everything about the request is checked before the model loads: the document, the positions
    # (1-based, in the user's terms), the settings.
    text, name = _read_document(args)
    settings = _settings(args)
    lang = _language(args, name)
    try:
        pipeline.check_document(text, settings)
    except pipeline.BadRequest as exc:
        args.parser.error(str(exc))
    pos = _Positions(text, args.parser)
    request = _request(args, text, pos, lang, settings)
    try:
        filler = ModelHost().get(settings)
    except ModelLoadError as exc:
        print(f"canvas-ls: model not loaded: {exc}", file=sys.stderr)
        return 1
    try:
        outcome = request(filler, on_step=_print_step if args.show_steps else None)
        info = filler.info()
    except pipeline.BadRequest as exc:
        print(f"canvas-ls: {exc}", file=sys.stderr)
        return 1
    finally:
        filler.close()
    if args.json:
        spans = [{"start": pos.position(e.start), "end": pos.position(e.end), "text": e.text} for e in outcome.edits]
        report = {"file": name, "language": lang or "plaintext", **fill_json(outcome), "spans": spans}
        print(json.dumps({**report, "model": info.describe()}, indent=2))
        return 0
    out = text
    for e in sorted(outcome.edits, key=lambda e: e.start, reverse=True):
        out = out[: e.start] + e.text + out[e.end :]
    sys.stdout.buffer.write(out.encode("utf-8"))  # bytes: the document's own newlines, untranslated
    sys.stdout.flush()
    print(_summary(outcome, info.describe()), file=sys.stderr)
    return 0


def _language(args: argparse.Namespace, name: str) -> str | None:
    """--lang, else the file name's language; None (said on stderr) fills plain text."""
    lang = args.lang or language_for(None, name if args.file != "-" else "")
    if args.lang and args.lang not in SUPPORTED:
        args.parser.error(f"--lang {args.lang!r}: expected one of {', '.join(SUPPORTED)}")
    if lang is None:
        print(
            f"canvas-ls: {name}: plain text, no syntax checks (syntax-aware languages: {', '.join(SUPPORTED)}; --lang sets one)",
            file=sys.stderr,
        )
    return lang


def _request(args: argparse.Namespace, text: str, pos: _Positions, lang: str | None, settings):
    """What --at, --range, --repair or --body asks for, as request(filler, on_step=...) -> FillOutcome.
    Its positions are checked here (exit 2 with the reason), before the model loads."""
    if args.at:
        offset = pos.offset(*args.at, "--at")
        return lambda inf, **kw: pipeline.complete_at(inf, text, offset, lang, settings, **kw)
    if args.range:
        spans = _spans(args.range, "--range", pos)
        return lambda inf, **kw: pipeline.fill_selections(inf, text, spans, lang, settings, **kw)
    if getattr(args, "repair", None):
        spans = _spans(args.repair, "--repair", pos)
        try:
            spans = repair.check_repair_spans(text, spans, settings)
        except pipeline.BadRequest as exc:
            args.parser.error(f"--repair: {exc}")
        return lambda inf, **kw: repair.repair_selections(inf, text, spans, lang, settings, **kw)
    if lang is None:
        args.parser.error(f"--body needs a syntax-aware language to find the function ({', '.join(SUPPORTED)})")
    offset = pos.offset(args.body, 1, "--body")
    return lambda inf, **kw: pipeline.fill_body(inf, text, offset, lang, settings, **kw)


def _spans(ranges: list[tuple[int, int, int, int]], flag: str, pos: _Positions) -> list[tuple[int, int]]:
    """Offsets of 1-based L1:C1-L2:C2 ranges; a reversed one (or an empty one to repair) stops (exit 2)."""
    spans = []
    for l1, c1, l2, c2 in ranges:
        what = f"{flag} {l1}:{c1}-{l2}:{c2}"
        a, b = pos.offset(l1, c1, what), pos.offset(l2, c2, what)
        if b < a:
            pos.parser.error(f"{what} is reversed: its end comes before its start")
        if a == b and flag == "--repair":
            pos.parser.error(f"{what} is empty: select the code to repair")
        spans.append((a, b))
    return spans


def _print_step(event) -> None:
    """--show-steps: the canvas of every step, on stderr."""
    print(f"--- {event.label}: {event.committed}/{event.slots} slots committed", file=sys.stderr)
    for i, s in enumerate(event.texts):
        print(("" if len(event.texts) == 1 else f"[hole {i + 1}] ") + _printable(s), file=sys.stderr)


def _summary(outcome, model: str) -> str:
    """One line for stderr after a plain fill: what was filled, how long it took, with which model."""
    r = outcome.result
    if not outcome.edits:
        what = f"no fill: {outcome.note or 'nothing to fill'}"
    elif outcome.mode == "repair":
        changed = r.changed_tokens if r else 0
        what = f"repair: {len(outcome.edits)} edit(s), {changed} token(s) changed"
    else:
        chars = sum(len(e.text) for e in outcome.edits)
        what = f"{outcome.mode} fill: {len(outcome.edits)} span(s), {chars} characters"
    if outcome.edits and outcome.note:
        what += f" ({outcome.note})"
    if r is not None:
        what += f"; {r.seconds:.2f} s, {r.forward_passes} forward passes, {r.tokens_per_pass:.1f} tokens/pass"
        if r.repairs:
            what += f", {r.repairs} repair round(s)"
    return f"canvas-ls: {what}; model {model}"


def cmd_check(args: argparse.Namespace) -> int:
    """Report versions, device, model and grammars; exit 1 if something is wrong."""
    ok = True
    print(f"canvas-ls {__version__}")
    versions = ", ".join(f"{name} {_version(name)}" for name in ("torch", "transformers", "pygls", "tree-sitter"))
    print(f"python {platform.python_version()}, {versions}")
    settings = _settings(args)
    path = model_dir_for(settings)
    bundled = default_model_path()
    print(
        f"model: {path}"
        + (
            " (bundled)"
            if bundled and path == bundled
            else " (tiny random-weight demo model: output is noise)"
            if not settings.modelPath and not bundled
            else ""
        )
    )
    t0 = time.perf_counter()
    try:
        info = ModelHost().get(settings).info()
        print(f"  loaded in {time.perf_counter() - t0:.1f}s: {info.describe()}, canvas {info.canvas_length}")
    except ModelLoadError as exc:
        ok = False
        for problem in str(exc).split("; "):
            print(f"  PROBLEM: {problem}")
    for lang in SUPPORTED:
        try:
            parse("x", lang)
            print(f"grammar {lang}: ok")
        except Exception as exc:  # a broken grammar wheel should be named, not crash the check
            ok = False
            print(f"grammar {lang}: PROBLEM {exc}")
    print("status: ok" if ok else "status: PROBLEMS FOUND (see above)")
    return 0 if ok else 1


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


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
    example = Path(args.file) if args.file else Path(os.environ.get("TMPDIR", "/tmp")) / "canvas-ls-demo.py"
    if not args.file:
        example.write_text(DEMO)
    text = example.read_text()
    line_no = (
        next(i for i, l in enumerate(text.splitlines(), 1) if l.rstrip().endswith("return")) if not args.at else None
    )
    at = args.at or (line_no, len(text.splitlines()[line_no - 1]) + 1)
    if not default_model_path() and not args.model:
        print(
            "canvas-ls demo: no trained model is bundled yet, so this uses a tiny RANDOM-WEIGHT model.\n"
            "Its output is noise: the demo shows the machinery (canvas, steps, post-processing), not quality.\n",
            file=sys.stderr,
        )
    print(f"canvas-ls demo: filling {example} at {at[0]}:{at[1]}\n{text}", file=sys.stderr)
    # The demo shows the canvas. An editor's completion after `return ` may take the left-to-right
    # draft instead (singleLineDecoder auto, the bundled model's choice): no steps to show there.
    sets = list(getattr(args, "set", None) or [])
    if not any(item.startswith("singleLineDecoder=") for item in sets):
        sets.append("singleLineDecoder=diffusion")
    ns = argparse.Namespace(
        **{
            **vars(args),
            "file": str(example),
            "at": at,
            "range": None,
            "repair": None,
            "body": None,
            "json": False,
            "show_steps": True,
            "verbose": False,
            "lang": None,
            "set": sets,
        }
    )
    print("=== filled file ===", file=sys.stderr)
    return cmd_fill(ns)


def _model_args(p: argparse.ArgumentParser) -> None:
    """The model and setting flags of fill, check and demo."""
    p.add_argument(
        "--model", help="checkpoint directory (setting modelPath; default: bundled, else a tiny random demo model)"
    )
    p.add_argument("--device", help="setting device: auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--dtype", help="setting dtype: auto, float32, bfloat16 or float16")
    p.add_argument("--steps", type=int, help="settings maxSteps and lineSteps: most denoising steps per round")
    p.add_argument("--seed", type=int, help="setting seed")
    p.add_argument(
        "--set",
        metavar="NAME=VALUE",
        action="append",
        help="any server setting (README's configuration table), e.g. --set threads=1 --set singleLineSlots=[16]; repeatable",
    )
    p.set_defaults(parser=p)


def _add_fill_parser(sub) -> None:
    """`canvas-ls fill FILE` and one of --at, --range, --repair, --body."""
    p = sub.add_parser("fill", help="fill a hole in a file (or repair a range) and print the result")
    p.add_argument("file", help="the file, or - for standard input")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--at", metavar="LINE:COL", type=_position_arg, help="complete at this position (1-based)")
    where.add_argument(
        "--range",
        metavar="L1:C1-L2:C2",
        type=_range_arg,
        action="append",
        help="fill this range; repeat for several, filled jointly",
    )
    where.add_argument(
        "--repair",
        metavar="L1:C1-L2:C2",
        type=_range_arg,
        action="append",
        help="repair the code in this range: only what the model finds unlikely changes (setting repairThreshold); repeatable",
    )
    where.add_argument(
        "--body", metavar="LINE", type=_line_arg, help="regenerate the body of the function around this line"
    )
    p.add_argument("--lang", help="language of the text (default: from the file name; needed for stdin)")
    p.add_argument(
        "--json",
        action="store_true",
        help="print the filled spans with timing, forward passes, denoising steps and tokens per pass",
    )
    p.add_argument("--show-steps", action="store_true", help="print the canvas at each step (stderr)")
    p.add_argument("-v", "--verbose", action="store_true")
    _model_args(p)
    p.set_defaults(func=cmd_fill)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="canvas-ls", description="Code infilling with a text-diffusion model, over LSP or the command line."
    )
    parser.add_argument("--version", action="version", version=f"canvas-ls {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="speak LSP over stdio")
    p.add_argument("--model", help="checkpoint directory (overridden by the client's modelPath setting)")
    p.add_argument("--log-file")
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="overrides the logLevel setting (default warning)",
    )
    p.add_argument("--stdio", action="store_true", help="accepted for clients that add it; stdio is the only transport")
    p.set_defaults(func=cmd_serve)

    _add_fill_parser(sub)

    p = sub.add_parser("check", help="report device, model, grammars and versions")
    _model_args(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("demo", help="fill an example file, showing each denoising step")
    p.add_argument("file", nargs="?")
    p.add_argument("--at", metavar="LINE:COL", type=_position_arg)
    _model_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "engine", help="run the shared model engine: one process per model serving every language server"
    )
    add_engine_arguments(p)
    p.set_defaults(func=engine_main)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
