"""Syntax safety: does any APPLIED fill leave a document with more syntax errors than before?

Runs fills of the model (by default the tiny random-weight one, whose output is noise: the harshest
test of the syntax judge) over a corpus of real source files in six languages, three kinds each:

  inline     `pipeline.complete_at` at a cursor (end of a line, a fresh line inside a function, after
             an opening bracket or `=`);
  selection  `pipeline.fill_selections` over one to three whole lines, a line's code, the rest of a
             line after `=`/`(`, or two lines' code at once (two holes on one canvas);
  body       `pipeline.fill_body`: the body of a function.

A fill is "applied" when the pipeline returns edits. It "broke" the document when, after its edits,
Python's `ast.parse` fails where it succeeded before (Python), or tree-sitter reports more ERROR and
MISSING nodes over the whole tree (hidden MISSING tokens included) or an error tree where there was
none (the other languages). The count of broken applied fills must be zero. Also reported: the share
of requests that end with nothing filled, per language and kind, and the seconds taken.

    .venv/bin/python benchmarks/syntax_safety.py                 # 2,160 fills, 7-10 minutes on 2 shared cores
    .venv/bin/python benchmarks/syntax_safety.py --quick         # 90 fills
    .venv/bin/python benchmarks/syntax_safety.py --limit 300 --extra ~/src/project

The corpus is benchmarks/syntax_corpus/<lang>/ (files written for this benchmark) plus, with --extra,
every supported file under the given directories that parses cleanly. Tasks and model seeds are
fixed by --seed, so a run is repeatable. Writes results/syntax_safety.json and .png.
"""

from __future__ import annotations

import argparse
import ast
import json
import platform
import random
import sys
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import torch

from canvas_ls.server.model_host import ModelHost
from canvas_ls.server.pipeline import BadRequest, complete_at, fill_body, fill_selections
from canvas_ls.server.settings import parse_settings
from canvas_ls.server.syntax import error_count, function_body, language_for
from canvas_ls.server.syntax.functions import FUNCTION_TYPES, body_span
from canvas_ls.server.syntax.parsed import Parsed

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "benchmarks" / "syntax_corpus"
LANGS = ("python", "javascript", "typescript", "go", "rust", "lua")
KINDS = ("inline", "selection", "body")


# ---------------------------------------------------------------- corpus and tasks


def load_corpus(extra: list[Path]) -> dict[str, list[tuple[str, str]]]:
    """lang -> [(name, text)], only files that parse cleanly (the measure needs a clean start)."""
    files: dict[str, list[tuple[str, str]]] = defaultdict(list)
    paths = sorted(CORPUS.glob("*/*"))
    for d in extra:
        paths += sorted(p for p in d.rglob("*") if p.is_file())
    for path in paths:
        lang = language_for(None, str(path))
        lang = "typescript" if lang == "tsx" else lang
        if lang not in LANGS:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if "\x00" in text or not text.strip() or len(text) > 200_000 or error_total(text, lang) != 0:
            continue
        if lang == "python" and not python_parses(text):
            continue
        name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        files[lang].append((name, text))
    return files


def python_parses(text: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(text)
        return True
    except (SyntaxError, ValueError):
        return False


def error_total(text: str, lang: str) -> int:
    """ERROR + MISSING nodes over the whole tree (hidden MISSING tokens included), and at least 1
    whenever tree-sitter calls the tree an error tree."""
    n = error_count(text, lang)
    return max(n, 1) if n == 0 and Parsed(text, lang).root.has_error else n


def broke(before: str, after: str, lang: str) -> bool:
    if lang == "python":
        return python_parses(before) and not python_parses(after)
    return error_total(after, lang) > error_total(before, lang)


def _lines(text: str) -> list[tuple[int, int]]:
    """(start, end) of every line, end before the newline."""
    out, pos = [], 0
    for line in text.split("\n"):
        out.append((pos, pos + len(line)))
        pos += len(line) + 1
    return out


def _bodies(text: str, lang: str) -> list[tuple[int, int]]:
    """Body spans of every function in the file (non-empty ones)."""
    p = Parsed(text, lang)
    out, stack = [], [p.root]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.is_named and node.type in FUNCTION_TYPES[lang]:
            span = body_span(p, node)
            if span is not None and text[span.start : span.end].strip():
                out.append((span.start, span.end))
    return sorted(out)


def _inside_bodies(lines, bodies):
    """Indices of code lines that lie inside some function body."""
    return [i for i, (s, e) in enumerate(lines) if any(b0 <= s and e <= b1 for b0, b1 in bodies)]


def make_task(rng: random.Random, kind: str, lang: str, name: str, text: str) -> dict | None:
    lines = _lines(text)
    bodies = _bodies(text, lang)
    code = [i for i in _inside_bodies(lines, bodies) if text[lines[i][0] : lines[i][1]].strip()]
    if not code:
        code = [i for i, (s, e) in enumerate(lines) if text[s:e].strip()]
    task = {"kind": kind, "lang": lang, "file": name, "text": text}
    if kind == "body":
        if not bodies:
            return None
        b0, b1 = rng.choice(bodies)
        offset = rng.randrange(b0 + 1, b1) if b1 > b0 + 1 else b0
        if function_body(text, lang, offset) is None:
            return None
        return {**task, "offset": offset}
    i = rng.choice(code)
    s, e = lines[i]
    line = text[s:e]
    indent = len(line) - len(line.lstrip(" \t"))
    if kind == "inline":
        r = rng.random()
        if r < 0.45:  # end of a code line
            return {**task, "offset": e}
        if r < 0.75:  # a fresh line inside the function, indented like the line below it
            nxt = lines[i + 1] if i + 1 < len(lines) else (e, e)
            nline = text[nxt[0] : nxt[1]]
            ind = nline[: len(nline) - len(nline.lstrip(" \t"))] if nline.strip() else line[:indent]
            new = text[:e] + "\n" + ind + text[e:]
            return {**task, "text": new, "offset": e + 1 + len(ind)}
        spots = [
            s + k + 1
            for k, ch in enumerate(line)
            if ch in "(=[{," and (k + 1 == len(line) or not (line[k + 1].isalnum() or line[k + 1] == "_"))
        ]
        return {**task, "offset": rng.choice(spots) if spots else e}
    # selection
    r = rng.random()
    if r < 0.1:  # two lines' code, filled jointly on one canvas
        later = [j for j in code if i + 1 < j <= i + 6]  # near: the text between is held on the canvas
        if later:
            j = rng.choice(later)
            (s2, e2), line2 = lines[j], text[lines[j][0] : lines[j][1]]
            return {**task, "spans": [(s + indent, e), (s2 + len(line2) - len(line2.lstrip(" \t")), e2)]}
    if r < 0.5:  # whole lines, from column 0
        j = min(len(lines) - 1, i + rng.randrange(3))
        return {**task, "spans": [(s, lines[j][1])]}
    if r < 0.75:  # a line's code, without its indentation
        return {**task, "spans": [(s + indent, e)]}
    cuts = [s + k + 1 for k, ch in enumerate(line) if ch in "=(" and k > indent]
    start = rng.choice(cuts) if cuts else s + indent
    while start < e and text[start] == " ":
        start += 1
    return {**task, "spans": [(start, e)]}


def plan(files: dict[str, list[tuple[str, str]]], limit: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    cells = [(lang, kind) for lang in LANGS for kind in KINDS if files.get(lang)]
    tasks: list[dict] = []
    for n in range(limit):
        lang, kind = cells[n % len(cells)]
        for _ in range(50):
            name, text = rng.choice(files[lang])
            task = make_task(rng, kind, lang, name, text)
            if task is not None:
                tasks.append({**task, "seed": seed * 100_003 + n})
                break
    return tasks


# ---------------------------------------------------------------- running


def apply_edits(text: str, edits) -> str:
    for e in sorted(edits, key=lambda e: e.start, reverse=True):
        text = text[: e.start] + e.text + text[e.end :]
    return text


def run_task(infiller, task: dict, base) -> dict:
    settings, problems = parse_settings({"seed": task["seed"] % (2**31 - 1)}, base)
    assert not problems, problems
    text, lang = task["text"], task["lang"]
    t0 = time.perf_counter()
    try:
        if task["kind"] == "inline":
            out = complete_at(infiller, text, task["offset"], lang, settings)
        elif task["kind"] == "selection":
            out = fill_selections(infiller, text, task["spans"], lang, settings)
        else:
            out = fill_body(infiller, text, task["offset"], lang, settings)
    except BadRequest as exc:
        return {
            "applied": False,
            "broke": False,
            "none": False,
            "bad_request": str(exc),
            "seconds": time.perf_counter() - t0,
        }
    seconds = time.perf_counter() - t0
    applied = bool(out.edits)
    after = apply_edits(text, out.edits) if applied else text
    return {
        "applied": applied,
        "broke": applied and broke(text, after, lang),
        "none": out.mode == "none",
        "note": out.note,
        "edits": [(e.start, e.end, e.text) for e in out.edits],
        "seconds": seconds,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=2160, help="number of fills (spread evenly over language x kind)")
    ap.add_argument("--quick", action="store_true", help="90 fills (5 per language x kind)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=8, help="maxSteps")
    ap.add_argument("--extra", type=Path, action="append", default=[], help="also take files from this directory")
    ap.add_argument("--model", default="")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--settings", default="{}", help="JSON of further server settings")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "syntax_safety.json")
    args = ap.parse_args()
    limit = 90 if args.quick else args.limit
    torch.set_num_threads(1)
    raw = {
        "modelPath": args.model,
        "device": args.device,
        "maxSteps": args.steps,
        "threads": 1,
        **json.loads(args.settings),
    }
    base, problems = parse_settings(raw)
    if problems:
        sys.exit("; ".join(problems))
    files = load_corpus(args.extra)
    tasks = plan(files, limit, args.seed)
    infiller = ModelHost().get(base)
    torch.set_num_threads(1)
    info = infiller.info()
    print(
        f"model: {info.describe()}; {len(tasks)} fills over {sum(len(v) for v in files.values())} files",
        file=sys.stderr,
    )

    cells: dict[tuple[str, str], Counter] = defaultdict(Counter)
    broken_examples = []
    refusals: Counter = Counter()
    t_start = time.perf_counter()
    for n, task in enumerate(tasks, 1):
        r = run_task(infiller, task, base)
        c = cells[(task["lang"], task["kind"])]
        c["fills"] += 1
        c["applied"] += r["applied"]
        c["broke"] += r["broke"]
        c["nothing"] += not r["applied"]
        c["mode_none"] += r["none"]
        c["bad_request"] += "bad_request" in r
        if "bad_request" in r:
            refusals[r["bad_request"][:80]] += 1
        c["seconds"] += r["seconds"]
        if r["broke"]:
            broken_examples.append(
                {k: task[k] for k in ("lang", "kind", "file", "seed")}
                | {"where": task.get("spans", task.get("offset")), "edits": r["edits"], "note": r["note"]}
            )
            print(f"BROKE {task['lang']} {task['kind']} {task['file']} {r['edits']!r}", file=sys.stderr)
        if n % 25 == 0 or n == len(tasks):
            el = time.perf_counter() - t_start
            tot = sum(cells.values(), Counter())
            print(
                f"[{n}/{len(tasks)}] {el:.0f}s (eta {el / n * (len(tasks) - n):.0f}s) applied {tot['applied']} "
                f"broke {tot['broke']} nothing {tot['nothing']}",
                file=sys.stderr,
            )
    seconds = time.perf_counter() - t_start

    total = sum(cells.values(), Counter())
    per_cell = {f"{lang}/{kind}": dict(c) for (lang, kind), c in sorted(cells.items())}
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "model": info.describe(),
        "device": info.device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.machine(),
        "threads": 1,
        "settings": {k: raw[k] for k in raw if k not in ("modelPath", "device")},
        "seed": args.seed,
        "files": {lang: [n for n, _ in v] for lang, v in files.items()},
        "fills": total["fills"],
        "applied": total["applied"],
        "broke": total["broke"],
        "nothing_filled": total["nothing"],
        "nothing_filled_share": round(total["nothing"] / max(1, total["fills"]), 3),
        "mode_none": total["mode_none"],
        "bad_request": total["bad_request"],
        "refusals": dict(refusals),
        "seconds": round(seconds, 1),
        "seconds_per_fill": round(seconds / max(1, total["fills"]), 3),
        "per_kind": {k: dict(sum((c for (_, kk), c in cells.items() if kk == k), Counter())) for k in KINDS},
        "per_language": {
            lang: dict(sum((c for (ll, _), c in cells.items() if ll == lang), Counter())) for lang in LANGS
        },
        "cells": per_cell,
        "broken_examples": broken_examples[:30],
    }
    for group in ("per_kind", "per_language", "cells"):
        for c in result[group].values():
            c["seconds"] = round(c.get("seconds", 0.0), 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(cells, result, args.out.with_suffix(".png"))
    summary = {
        k: result[k]
        for k in (
            "fills",
            "applied",
            "broke",
            "nothing_filled",
            "nothing_filled_share",
            "mode_none",
            "bad_request",
            "seconds",
            "seconds_per_fill",
        )
    }
    print(json.dumps(summary | {"per_kind": result["per_kind"]}, indent=1))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}", file=sys.stderr)
    return 1 if total["broke"] else 0


def plot(cells, result, png: Path) -> None:
    import matplotlib  # the `bench` extra, slow to import: only to draw the plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 4.8))
    colors = {"applied": "#4c9a5b", "broke": "#d62728", "nothing": "#b0b0b0"}
    ticks, labels, x = [], [], 0.0
    for lang in LANGS:
        xs = []
        for kind in KINDS:
            c = cells.get((lang, kind))
            if not c:
                continue
            ok = c["applied"] - c["broke"]
            first = not ticks
            ax.bar(x, ok, color=colors["applied"], label="applied" if first else None)
            ax.bar(x, c["broke"], bottom=ok, color=colors["broke"], label="applied, broke the file" if first else None)
            ax.bar(
                x,
                c["fills"] - c["applied"],
                bottom=c["applied"],
                color=colors["nothing"],
                label="nothing filled" if first else None,
            )
            ticks.append(x)
            labels.append(kind)
            xs.append(x)
            x += 1
        if xs:
            ax.text(
                sum(xs) / len(xs),
                -0.16,
                lang,
                transform=ax.get_xaxis_transform(),
                ha="center",
                fontsize=9,
                weight="bold",
            )
        x += 0.8
    ax.set_xticks(ticks, labels, fontsize=7, rotation=30)
    ax.set_ylabel("fills")
    ax.set_title(
        f"syntax safety: {result['fills']} fills, {result['applied']} applied, {result['broke']} broke the file, "
        f"{result['nothing_filled_share']:.0%} nothing filled ({result['seconds']:.0f} s)",
        fontsize=9,
    )
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.text(
        0.01, -0.04, f"{result['model']}; maxSteps {result['settings']['maxSteps']}; seed {result['seed']}", fontsize=6
    )
    fig.savefig(png, dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    sys.exit(main())
