"""Python's own parser as a second judge of Python fills.

tree-sitter-python is forgiving where CPython is not: it accepts indentation that Python
rejects (``unindent does not match any outer indentation level``, a stray indent after a
dedent, tabs mixed with spaces), and it hides some errors from its visible tree. So a
Python fill is also compiled (``PyCF_ONLY_AST``: parse only, no bytecode) by the running
interpreter: when the region around the fills compiles before the fill and not after it,
the fill added a syntax error, reported where CPython puts it.

The region is the whole text when it is small. In a large text it is the run of
top-level statements around the fills (``_region``): from the last column-0 statement
line before the first fill to the first one after the last fill. Text outside that region
is unchanged by the fills and the region is cut where Python's tokenizer is at module
level, so the region compiles after the fill exactly when the whole text would (given the
region compiled before). If the region does not compile before the fill (a column-0 line
inside a multi-line string fooled the boundary), the whole text is tried; if that does not
compile either, the code was already broken there and this judge abstains (tree-sitter's
error counts still judge the fill).

Compile results are cached by text, so the unchanged before-text of a fill is compiled
once however often the fill is judged.
"""

from __future__ import annotations

import ast
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence

from .span import Span

Fill = tuple[Span, str]

WHOLE_TEXT_CHARS = 8_000  # texts up to this size are compiled whole
_CACHE_SIZE = 64
_cache: OrderedDict[str, tuple[int, int, int, int] | None] = OrderedDict()
_lock = threading.Lock()

# A line that starts a top-level statement: code in column 0 that does not continue the
# statement above (a closing bracket, ``else``/``elif``/``except``/``finally``).
_TOP_LINE = re.compile(r"^(?![ \t\r\n#)\]}]|(?:else|elif|except|finally)\b)", re.M)


def compile_error(src: str) -> tuple[int, int, int, int] | None:
    """None when ``src`` compiles, else CPython's (lineno, offset, end_lineno, end_offset),
    1-based as in SyntaxError (offsets count characters); 0 where CPython gives none."""
    with _lock:
        if src in _cache:
            _cache.move_to_end(src)
            return _cache[src]
    found = _compile(src)
    with _lock:
        _cache[src] = found
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return found


def _compile(src: str) -> tuple[int, int, int, int] | None:
    try:
        with warnings.catch_warnings():
            # SyntaxWarnings (``"\d"``, ``is`` with a literal) are not errors, even under -W error.
            warnings.simplefilter("ignore")
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
    col = offset - (src.rfind("\n", 0, offset) + 1) + 1
    return (line, col, line, col + 1)


def added_compile_error(before: str, fills: Sequence[Fill], after: str) -> Span | None:
    """Where, in ``after`` (``before`` with ``fills`` applied), the fills made Python's
    parser fail; None when they did not, or when the code was already broken there."""
    if not fills:
        return None
    lo = min(span.start for span, _ in fills)
    hi = max(span.end for span, _ in fills)
    a, b = _region(before, lo, hi)
    if compile_error(before[a:b]) is not None:
        if (a, b) == (0, len(before)) or compile_error(before) is not None:
            return None
        a, b = 0, len(before)
    growth = sum(len(text) - span.length for span, text in fills)
    region = after[a : b + growth]
    found = compile_error(region)
    if found is None:
        return None
    return _span_in(region, a, found)


def _region(text: str, lo: int, hi: int) -> tuple[int, int]:
    """Top-level statements around ``text[lo:hi]`` (whole lines, ``b`` at a line start)."""
    if len(text) <= WHOLE_TEXT_CHARS:
        return 0, len(text)
    a = 0
    for m in _TOP_LINE.finditer(text, 0, lo):
        if m.start() < lo and _starts_statement(text, m.start()):
            a = m.start()
    b = len(text)
    for m in _TOP_LINE.finditer(text, hi + 1):
        if m.start() > hi and _starts_statement(text, m.start()):
            b = m.start()
            break
    return a, b


def _starts_statement(text: str, at: int) -> bool:
    """A column-0 line at ``at`` starts a statement unless the line above continues into
    it (a trailing backslash) or is a decorator."""
    if at == 0:
        return True
    end = at - 1  # the newline ending the line above
    while end > 0 and text[end - 1] in " \t\r":
        end -= 1
    prev = text[text.rfind("\n", 0, end) + 1 : end]
    return not prev.endswith("\\") and not prev.lstrip().startswith("@")


def _span_in(region: str, base: int, found: tuple[int, int, int, int]) -> Span:
    """CPython's 1-based (line, column) location in ``region`` as a span of the text
    ``region`` starts at ``base`` in; clamped to the region."""
    line, col, end_line, end_col = found
    start = _offset(region, line, col)
    end = _offset(region, end_line, end_col) if end_line >= line and end_col > 0 else start
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
