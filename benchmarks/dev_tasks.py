"""A development set of single-line holes, for choosing decoding settings without touching evaluation data.

HumanEval-Infilling (../shared/benchmarks) is for reporting only: nothing may be tuned on it. Decoding
choices (steps, slots, repair) are compared on these tasks instead. They come from Python packages that
were never in the bundled model's training data: the GPU machine that prepared the data
(model/TRAINING.md) has none of them installed, so every file here is unseen code.

Each task is one whole statement line of a function body removed, the cursor at the start of the line
that followed it: the shape of HumanEval's single-line split and of the server's "line" completion
mode. The file's text around it is cut to at most 60 lines before and 30 after. Tasks carry no tests,
so infill_eval.py reports exact match, parse rate, empty rate and character similarity for them.

    .venv/bin/python benchmarks/dev_tasks.py                      # -> benchmarks/results/tmp/dev_single.jsonl.gz
    .venv/bin/python benchmarks/dev_tasks.py --lines 3            # three consecutive lines: dev_lines3.jsonl.gz
    .venv/bin/python benchmarks/dev_tasks.py --mid-line           # the rest of a line: dev_midline.jsonl.gz

With --mid-line the line's start stays in the prompt, up to its first "= ", "return ", "raise ",
"yield " or call's "(" (e.g. "        value = "): the cursor sits mid-line, the server's "single" mode
(the canvas or the left-to-right draft), and the task is the rest of the line.
    .venv/bin/python benchmarks/infill_eval.py --tasks benchmarks/results/tmp/dev_single.jsonl.gz --limit 200
"""

from __future__ import annotations

import argparse
import ast
import gzip
import importlib.util
import json
import random
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Installed here (the server's and the tests' own dependencies) but not on the training machine.
PACKAGES = ["pydantic", "cattrs", "pygls", "annotated_types", "pytest_asyncio", "pytest_lsp", "playwright"]
BEFORE, AFTER = 60, 30
# Where a --mid-line task's cursor goes: after the line's first of these (a typical pause while typing).
MID_LINE = re.compile(r"^\s*(?:return |raise |yield |[^=()\n]*?[^=!<>+\-*/%&|^:]= |[\w.]+\()")


def package_files(name: str) -> list[Path]:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted(p for loc in spec.submodule_search_locations for p in Path(loc).rglob("*.py"))


def holes_in(path: Path, lines_per_hole: int = 1) -> list[dict]:
    """Every removable run of `lines_per_hole` consecutive single-line statements of a function body."""
    try:
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    lines = text.splitlines(keepends=True)
    out = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            body = getattr(node, "body", None)
            if not isinstance(body, list):
                continue
            ok = [_removable(stmt, lines) and not (stmt is fn.body[-1] and len(fn.body) == 1) for stmt in body]
            for j in range(len(body) - lines_per_hole + 1):
                run = body[j : j + lines_per_hole]
                if not all(ok[j : j + lines_per_hole]):
                    continue
                if any(b.lineno != a.end_lineno + 1 for a, b in zip(run, run[1:])):
                    continue  # blank lines or comments between them
                i = run[0].lineno - 1
                if run[-1].end_lineno >= len(lines):
                    continue
                out.append({"path": path, "line": i, "n": lines_per_hole, "lines": lines})
    return out


def _removable(stmt: ast.stmt, lines: list[str]) -> bool:
    """A simple statement on one line of moderate length (not a docstring)."""
    if not isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return, ast.Expr, ast.Raise)):
        return False
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
        return False  # a docstring
    line = lines[stmt.lineno - 1]
    return stmt.lineno == stmt.end_lineno and len(line.strip()) >= 8 and len(line) <= 100


def make_task(h: dict, task_id: str, mid_line: bool = False) -> dict | None:
    lines, i, n = h["lines"], h["line"], h["n"]
    if mid_line:  # the cursor after the line's start; the rest of the line is the task
        m = MID_LINE.match(lines[i])
        rest = lines[i][m.end() : len(lines[i].rstrip("\n"))] if m else ""
        if not rest.strip():
            return None
        return {
            "task_id": task_id,
            "prompt": "".join(lines[max(0, i - BEFORE) : i]) + lines[i][: m.end()],
            "canonical_solution": rest,
            "suffix": "\n" + "".join(lines[i + 1 : i + 1 + AFTER]),
            "source": f"{h['path'].parent.name}/{h['path'].name}:{i + 1}",
        }
    return {
        "task_id": task_id,
        "prompt": "".join(lines[max(0, i - BEFORE) : i]),
        "canonical_solution": "".join(lines[i : i + n]),
        "suffix": "".join(lines[i + n : i + n + AFTER]),
        "source": f"{h['path'].parent.name}/{h['path'].name}:{i + 1}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lines", type=int, default=1, help="consecutive statement lines per hole (2-3: multi-line)")
    ap.add_argument("--mid-line", action="store_true", help="the rest of a line after its start (single mode)")
    ap.add_argument(
        "--out", type=Path, help="default: benchmarks/results/tmp/dev_single.jsonl.gz (dev_lines3... with --lines)"
    )
    args = ap.parse_args()
    name = "dev_midline" if args.mid_line else "dev_single" if args.lines == 1 else f"dev_lines{args.lines}"
    args.out = args.out or ROOT / "benchmarks" / "results" / "tmp" / f"{name}.jsonl.gz"
    rng = random.Random(args.seed)
    by_file = [hs for name in PACKAGES for p in package_files(name) if (hs := holes_in(p, args.lines))]
    rng.shuffle(by_file)
    # One hole per file first, round robin, so no single large file dominates.
    tasks = []
    while len(tasks) < args.n and any(by_file):
        for hs in by_file:
            if hs and len(tasks) < args.n:
                task = make_task(hs.pop(rng.randrange(len(hs))), f"dev/{len(tasks)}", args.mid_line)
                if task is not None:
                    tasks.append(task)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(args.out, "wt") as f:
        for task in tasks:
            f.write(json.dumps(task) + "\n")
    print(f"{len(tasks)} tasks from {len(by_file)} files -> {args.out}")


if __name__ == "__main__":
    main()
