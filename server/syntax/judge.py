"""Judge fills by the syntax errors they add, not by absolute error counts.

Documents are often broken before we fill them (the incomplete line at the cursor is the
usual case), so an after-text error only counts against the fills when no error of the
before-text explains it. Following Cody's approach, before-errors are carried into the
after-text: outside the fills they shift with the edits, and one touching a fill's span
is stretched over that fill's new text. Each before-error explains at most one
after-error that it touches, so a fill that keeps the cursor's old error is fine, while
one that adds a second error in the same region (or an unclosed bracket reported at the
end of the file) is caught.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Iterator, Sequence

import tree_sitter

from .languages import language
from .parsed import Parsed, edited, parsed
from .span import Span

Fill = tuple[Span, str]


def error_spans(text: str, lang: str) -> list[Span]:
    """Character ranges of the outermost ERROR nodes and of MISSING nodes (zero-width)."""
    return _error_spans(parsed(text, lang))


def error_count(text: str, lang: str) -> int:
    return len(error_spans(text, lang))


def apply_fills(before: str, fills: Sequence[Fill]) -> str:
    """``before`` with each fill's span replaced by its text (spans must not overlap)."""
    parts, pos = [], 0
    for span, fill in _sorted_checked(before, fills):
        parts += [before[pos : span.start], fill]
        pos = span.end
    parts.append(before[pos:])
    return "".join(parts)


def fill_offsets_after(before: str, fills: Sequence[Fill]) -> list[Span]:
    """Where each fill's text lands in the after-text, in the order ``fills`` were given."""
    landed: dict[int, Span] = {}
    delta = 0
    order = sorted(range(len(fills)), key=lambda i: (fills[i][0].start, fills[i][0].end))
    _sorted_checked(before, fills)
    for i in order:
        span, fill = fills[i]
        start = span.start + delta
        landed[i] = Span(start, start + len(fill))
        delta += len(fill) - span.length
    return [landed[i] for i in range(len(fills))]


def added_errors(before: str, fills: Sequence[Fill], lang: str) -> list[Span]:
    """Ranges, in the after-text, of ERROR/MISSING nodes the fills introduced."""
    after = Parsed(apply_fills(before, fills), lang)
    return _judge(_error_spans(parsed(before, lang)), _moves(before, fills), after)[0]


def cut_at_syntax_boundary(before: str, span: Span, fill: str, lang: str) -> str:
    """Longest cut of ``fill`` that adds no syntax errors when it replaces ``span``.

    Cuts, longest first: the whole fill, then without its trailing lines one at a time
    (SAFIM style, keeping a final newline the fill ended with), then the first line
    trimmed back token by token; "" when nothing survives.

    When the hole already sits in broken code (``y = |``), a cut that repairs it wins over
    a longer one that merely keeps the old error (``x`` over ``x +``), and a cut whose own
    text ends up inside an error node (``)``) is refused even though the old error
    "explains" it.
    """
    base = parsed(before, lang)
    old = _error_spans(base)
    local = _local_errors(before, span, old)
    fallback = None
    for candidate in _cuts(fill):
        landed = Span(span.start, span.start + len(candidate))
        added, after = _judge(old, [(span, landed)], edited(base, span, candidate))
        if added:
            continue
        if not local or len(after) < len(old):
            return candidate
        inside = any(e.start < landed.end and landed.start < e.end for e in after)
        if fallback is None and not inside:
            fallback = candidate
    return fallback or ""


def _local_errors(before: str, span: Span, errors: list[Span]) -> list[Span]:
    """Old errors on the hole's line or at the next token: tree-sitter often reports an
    incomplete ``y = `` at the token that follows it."""
    start = before.rfind("\n", 0, span.start) + 1
    next_token = _WHITESPACE.match(before, span.end).end()
    region = Span(start, min(next_token + 1, len(before)))
    return [e for e in errors if e.touches(region)]


def _moves(before: str, fills: Sequence[Fill]) -> list[tuple[Span, Span]]:
    """Each filled span paired with where its text lands, in document order."""
    landed = fill_offsets_after(before, fills)
    return sorted(zip((span for span, _ in fills), landed), key=lambda move: move[0].start)


def _judge(old: list[Span], moves: list[tuple[Span, Span]], after: Parsed) -> tuple[list[Span], list[Span]]:
    """(errors of ``after`` that no ``old`` error explains, all errors of ``after``)."""
    new = _error_spans(after)
    carried = sorted(_carry(e, moves) for e in old)
    used = [False] * len(carried)
    unexplained = []
    for err in new:
        match = next((i for i, c in enumerate(carried) if not used[i] and c.touches(err)), None)
        if match is None:
            unexplained.append(err)
        else:
            used[match] = True
    return unexplained, new


def _carry(err: Span, moves: list[tuple[Span, Span]]) -> Span:
    """``err`` of the before-text as a range of the after-text; ``moves`` pairs each
    filled span with where its text landed, sorted by position."""

    def carry(pos: int, low: bool) -> int:
        delta = 0
        for old, new in moves:
            if pos < old.start:
                break
            if pos <= old.end:  # on or inside a filled span: stretch over its new text
                return new.start if low else new.end
            delta = new.end - old.end
        return pos + delta

    return Span(carry(err.start, True), carry(err.end, False))


@cache
def _python_blocks() -> tree_sitter.Query:
    return tree_sitter.Query(language("python"), "(block) @block")


def _empty_python_blocks(p: Parsed) -> list[Span]:
    """tree-sitter-python accepts ``if x:`` with no body at all; Python does not."""
    blocks = tree_sitter.QueryCursor(_python_blocks()).captures(p.root).get("block", [])
    return [p.span(b) for b in blocks if all(c.type == "comment" for c in b.named_children)]


def _error_spans(p: Parsed) -> list[Span]:
    out: list[Span] = _empty_python_blocks(p) if p.lang == "python" else []

    def visit(node: tree_sitter.Node) -> None:
        if node.is_error or node.is_missing:
            out.append(p.span(node))
            return  # nested errors belong to this one
        for child in node.children:
            if child.has_error or child.is_missing:
                visit(child)

    if p.root.has_error:
        visit(p.root)
    return sorted(out, key=lambda s: (s.start, s.end))


def _sorted_checked(before: str, fills: Sequence[Fill]) -> list[Fill]:
    ordered = sorted(fills, key=lambda f: (f[0].start, f[0].end))
    pos = 0
    for span, _ in ordered:
        if span.start < pos or span.end > len(before):
            raise ValueError(f"fill spans overlap or run past the text: {span}")
        pos = span.end
    return ordered


_WHITESPACE = re.compile(r"\s*")
_TOKEN = re.compile(r"\w+|\s+|.", re.S)
_NEWLINE = re.compile(r"\r?\n")


def _cuts(fill: str) -> Iterator[str]:
    newline = "\r\n" if "\r\n" in fill else "\n"
    tail = newline if fill.endswith("\n") else ""
    lines = _NEWLINE.split(fill[: len(fill) - len(tail)])
    for keep in range(len(lines), 0, -1):
        yield newline.join(lines[:keep]) + tail
    first = lines[0]
    ends = [m.end() for m in _TOKEN.finditer(first)]
    seen = {first}
    for end in reversed(ends[:-1]):
        cut = first[:end].rstrip()
        if cut and cut not in seen:
            seen.add(cut)
            yield cut + tail
