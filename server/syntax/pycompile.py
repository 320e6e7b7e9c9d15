"""Python's own parser as a second judge of Python fills.

tree-sitter-python is forgiving where CPython is not: it accepts indentation that Python
rejects (``unindent does not match any outer indentation level``, a stray indent after a
dedent, tabs mixed with spaces), and it hides some errors from its visible tree. So a
Python fill is also compiled (``PyCF_ONLY_AST``: parse only, no bytecode) by the running
interpreter: when the region around the fills compiles before the fill and not after it,
the fill added a syntax error, reported where CPython puts it.

The region is the whole text when it is small, starts in column 0 and compiles. Otherwise
(a large text, a window cut out of a large document that starts inside a class or
function, or a document broken elsewhere) it is the run of statements around the fills at
the text's base indentation (``_region``):
from the last statement line at that indentation before the first fill to the first one
after the last fill, dedented by the base indentation. Text outside that region is
unchanged by the fills, and the region is cut where Python's tokenizer is back at that
level, so the region compiles after the fill exactly when the whole would (given the
region compiled before); a fill that dedents below the base indentation is reported, the
safe side. If the region does not compile before the fill (a line inside a multi-line
string fooled the boundary search), the whole text is tried; if that does not compile
either, the code was already broken there and this judge abstains (tree-sitter's error
counts still judge the fill). Python's parser accepts ``return``/``await``/``break``
outside their blocks (the compiler proper rejects them), so a dedented method body parses.

Compile results are cached by text, so the unchanged before-text of a fill is compiled
once however often the fill is judged: in the process's cache budget (model/cache_budget.py), bounded
in bytes and dropped when the document closes.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Sequence
from functools import lru_cache

from canvas_ls.model.cache_budget import shared_budget, text_bytes

from .span import Span, line_start

Fill = tuple[Span, str]

WHOLE_TEXT_CHARS = 8_000  # texts up to this size are compiled whole
_CACHE_SIZE = 64  # compile results kept (of the texts tried last), within the cache budget's bytes
COMPILE_SPACE = "python compile results"
INDENT_SPACE = "python base indentation"
_MISSING = object()

_TRIPLE = re.compile(r'"""|\'\'\'')


def compile_error(src: str) -> tuple[int, int, int, int] | None:
    """None when ``src`` compiles, else CPython's (lineno, offset, end_lineno, end_offset),
    1-based as in SyntaxError (offsets count characters); 0 where CPython gives none."""
    budget = shared_budget()
    found = budget.get(COMPILE_SPACE, src, _MISSING)
    if found is not _MISSING:
        return found
    found = _compile(src)
    budget.put(COMPILE_SPACE, src, found, text_bytes(src) + 100, max_entries=_CACHE_SIZE)
    return found


def _ignore_fill_warnings() -> None:
    r"""SyntaxWarnings from compiling a fill (``"\d"``, ``is`` with a literal) are not errors, even under
    -W error: a filter on warnings whose source is "<fill>", put first whenever it is not (a test
    harness may reset the filters or add its own). Not `warnings.catch_warnings()`: it swaps the process's filters, and judges
    (model thread) and code actions (executor) compile on different threads."""
    first = warnings.filters[0] if warnings.filters else None
    if not (first and first[0] == "ignore" and first[3] is not None and first[3].pattern == "<fill>"):
        warnings.filterwarnings("ignore", module="<fill>")  # first, so no "error" filter comes before it


def _compile(src: str) -> tuple[int, int, int, int] | None:
    _ignore_fill_warnings()
    try:
        compile(src, "<fill>", "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
    except SyntaxError as exc:  # IndentationError and TabError are SyntaxErrors
        if exc.lineno is None:  # "source code string cannot contain null bytes" (3.11)
            return _position_of(src, src.find("\x00"))
        return (exc.lineno, exc.offset or 0, exc.end_lineno or 0, exc.end_offset or 0)
    except ValueError:  # null bytes, before 3.11.4
        return _position_of(src, src.find("\x00"))
    except (MemoryError, RecursionError):
        return None  # no verdict; tree-sitter still judges
    return None


def _position_of(src: str, offset: int) -> tuple[int, int, int, int]:
    offset = max(offset, 0)
    line = src.count("\n", 0, offset) + 1
    col = offset - (line_start(src, offset)) + 1
    return (line, col, line, col + 1)


def added_compile_error(before: str, fills: Sequence[Fill], after: str) -> Span | None:
    """Where, in ``after`` (``before`` with ``fills`` applied), the fills made Python's
    parser fail; None when they did not, or when the code was already broken there."""
    if not fills:
        return None
    lo = min(span.start for span, _ in fills)
    hi = max(span.end for span, _ in fills)
    for a, b, indent in _regions(before, lo, hi):
        if compile_error(_dedent(before[a:b], indent)[0]) is None:
            break
    else:
        return None  # already broken around the fills: no verdict
    growth = sum(len(text) - span.length for span, text in fills)
    region = after[a : b + growth]
    if indent:
        # A fill line left of the base indentation ends the block the whole region sits
        # in, which the dedented region cannot show: report it.
        short = _short_line(after, _landed(fills), indent)
        if short is not None:
            return Span(short, short)
    src, removed = _dedent(region, indent)
    found = compile_error(src)
    if found is None:
        return None
    return _span_in(region, a, found, removed)


def _regions(text: str, lo: int, hi: int) -> list[tuple[int, int, int]]:
    """Regions to try, in order, as (start, end, indentation): the whole text when it is
    small and starts in column 0, then the statements around the fills (which still
    compile when some other part of the document is broken), then the whole text."""
    whole = (0, len(text), 0)
    base = _base_indent(text)
    out = [whole] if base == 0 and len(text) <= WHOLE_TEXT_CHARS else []
    out.append(_region(text, lo, hi, base))
    if base == 0:
        out.append(whole)
    return list(dict.fromkeys(out))


def _region(text: str, lo: int, hi: int, base: int) -> tuple[int, int, int]:
    """(start, end, indentation): whole lines around ``text[lo:hi]``, ``end`` at a line
    start, cut at statements of indentation ``base`` (see the module docstring)."""
    tops = _top_lines(base)
    a = 0
    for m in tops.finditer(text, 0, lo):
        if m.start() < lo and _starts_statement(text, m.start()):
            a = m.start()
    b = len(text)
    for m in tops.finditer(text, hi + 1):
        if m.start() > hi and _starts_statement(text, m.start()):
            b = m.start()
            break
    return a, b, base


@lru_cache(maxsize=16)
def _top_lines(indent: int) -> re.Pattern[str]:
    """Lines that start a statement at ``indent``: code there that does not continue the
    statement above (a closing bracket, ``else``/``elif``/``except``/``finally``)."""
    return re.compile(rf"^[ \t]{{{indent}}}(?![ \t\r\n#)\]}}]|(?:else|elif|except|finally)\b)", re.M)


def _base_indent(text: str) -> int:
    """Least indentation of the code lines (lines inside triple-quoted strings skipped, as
    far as a lexical scan can tell); the last 16 texts' kept in the cache budget."""
    budget = shared_budget()
    found = budget.get(INDENT_SPACE, text)
    if found is None:
        found = _scan_base_indent(text)
        budget.put(INDENT_SPACE, text, found, text_bytes(text) + 100, max_entries=16)
    return found


def _scan_base_indent(text: str) -> int:
    best: int | None = None
    quote: str | None = None
    for line in text.split("\n"):
        if quote is None:
            code = line.lstrip(" \t")
            if code.strip() and not code.startswith("#"):
                width = len(line) - len(code)
                best = width if best is None else min(best, width)
        for m in _TRIPLE.finditer(line):
            if quote is None:
                quote = m.group()
            elif m.group() == quote:
                quote = None
    return best or 0


def _dedent(src: str, indent: int) -> tuple[str, list[int]]:
    """``src`` with up to ``indent`` leading spaces/tabs taken off every line, and how many
    were taken off each line."""
    if indent == 0:
        return src, []
    lines = src.split("\n")
    removed = [min(indent, len(line) - len(line.lstrip(" \t"))) for line in lines]
    return "\n".join(line[r:] for line, r in zip(lines, removed)), removed


def _landed(fills: Sequence[Fill]) -> list[Span]:
    out, delta = [], 0
    for span, text in sorted(fills, key=lambda f: (f[0].start, f[0].end)):
        out.append(Span(span.start + delta, span.start + delta + len(text)))
        delta += len(text) - span.length
    return out


def _short_line(after: str, landed: list[Span], indent: int) -> int | None:
    """Start of the first non-blank line that begins inside a fill's text and is indented
    less than ``indent``."""
    for span in landed:
        starts = [span.start] if span.start == 0 or after[span.start - 1] == "\n" else []
        nl = after.find("\n", span.start, span.end)
        while nl >= 0 and nl + 1 < span.end:
            starts.append(nl + 1)
            nl = after.find("\n", nl + 1, span.end)
        for pos in starts:
            end = after.find("\n", pos)
            line = after[pos : len(after) if end < 0 else end]
            code = line.lstrip(" \t")
            if code.strip() and len(line) - len(code) < indent:
                return pos
    return None


def _starts_statement(text: str, at: int) -> bool:
    """A line at ``at`` starts a statement unless the line above continues into it (a
    trailing backslash) or is a decorator."""
    if at == 0:
        return True
    end = at - 1  # the newline ending the line above
    while end > 0 and text[end - 1] in " \t\r":
        end -= 1
    prev = text[line_start(text, end) : end]
    return not prev.endswith("\\") and not prev.lstrip().startswith("@")


def _span_in(region: str, base: int, found: tuple[int, int, int, int], removed: list[int]) -> Span:
    """CPython's 1-based (line, column) location in the dedented ``region`` as a span of
    the text ``region`` starts at ``base`` in; clamped to the region."""
    line, col, end_line, end_col = found

    def shifted(ln: int, c: int) -> int:
        extra = removed[ln - 1] if 0 < ln <= len(removed) else 0
        return _offset(region, ln, c + extra)

    start = shifted(line, col)
    end = shifted(end_line, end_col) if end_line >= line and end_col > 0 else start
    return Span(base + start, base + max(start, end))


def _offset(region: str, line: int, col: int) -> int:
    pos = 0
    for _ in range(max(line, 1) - 1):
        nl = region.find("\n", pos)
        if nl < 0:
            return len(region)
        pos = nl + 1
    nl = region.find("\n", pos)
    line_end = len(region) if nl < 0 else nl
    return min(pos + max(col - 1, 0), line_end)
