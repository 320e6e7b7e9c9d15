"""Judge fills by the syntax errors they add, not by absolute error counts.

Documents are often broken before we fill them (the incomplete line at the cursor is the
usual case), so an after-text error only counts against the fills when no error of the
before-text explains it. Following Cody's approach, before-errors are carried into the
after-text: outside the fills they shift with the edits, and one touching a fill's span
is stretched over that fill's new text. Each before-error explains at most one
after-error that it touches, so a fill that keeps the cursor's old error is fine, while
one that adds a second error in the same region (or an unclosed bracket reported at the
end of the file) is caught.

Errors are every outermost ERROR node and every MISSING node, including MISSING hidden
tokens that appear in no node's children (``_error_spans``). Python fills are also judged
by CPython's parser (pycompile.py), which rejects indentation tree-sitter accepts. A cut
that ``cut_at_syntax_boundary`` keeps is judged once more on a fresh parse, since
tree-sitter's incremental reparse can disagree with a fresh one.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Iterator, Sequence

import tree_sitter

from canvas_ls.model.cache_budget import shared_budget, text_bytes

from .languages import language
from .parsed import Parsed, edited, parsed
from .pycompile import added_compile_error
from .span import Span, line_start

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
    """Ranges, in the after-text, of the syntax errors the fills introduced: ERROR/MISSING
    nodes no error of the before-text explains and, for Python, the place where CPython's
    parser first fails on a region that parsed before the fills (see pycompile.py)."""
    after = Parsed(apply_fills(before, fills), lang)
    added = _judge(_before_errors(before, lang), _moves(before, fills), after)[0]
    return _with_compile_error(added, before, fills, after.text, lang)


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
    old = _before_errors(before, lang)
    local = _local_errors(before, span, old)
    fallback = None
    for candidate in _cuts(fill):
        landed = Span(span.start, span.start + len(candidate))
        added, after = _judge(old, [(span, landed)], edited(base, span, candidate))
        if added or _compile_fails(before, span, candidate, lang):
            continue
        if not local or len(after) < len(old):
            if _confirmed(before, span, candidate, lang):
                return candidate
            continue
        inside = any(e.start < landed.end and landed.start < e.end for e in after)
        if fallback is None and not inside and _confirmed(before, span, candidate, lang):
            fallback = candidate
    return fallback or ""


def _compile_fails(before: str, span: Span, candidate: str, lang: str) -> bool:
    if lang != "python":
        return False
    return added_compile_error(before, [(span, candidate)], apply_fills(before, [(span, candidate)])) is not None


def _confirmed(before: str, span: Span, candidate: str, lang: str) -> bool:
    """The cuts are judged on incremental reparses; tree-sitter's incremental and fresh
    parses can disagree at the margins, so the cut we keep is judged once more afresh."""
    return not added_errors(before, [(span, candidate)], lang)


def _with_compile_error(added: list[Span], before: str, fills: Sequence[Fill], after: str, lang: str) -> list[Span]:
    if lang != "python":
        return added
    err = added_compile_error(before, fills, after)
    if err is None or any(e.touches(err) for e in added):
        return added
    # The fills caused it, so it never lies before the first of them (CPython reports an
    # unclosed bracket where it opened, which is in the fill).
    first = min(fill_offsets_after(before, fills)).start
    if err.start < first:
        err = Span(first, max(first, err.end))
    return sorted([*added, err])


def _local_errors(before: str, span: Span, errors: list[Span]) -> list[Span]:
    """Old errors on the hole's line or at the next token: tree-sitter often reports an
    incomplete ``y = `` at the token that follows it."""
    start = line_start(before, span.start)
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


BEFORE_ERRORS_SPACE = "syntax errors before a fill"


def _before_errors(text: str, lang: str) -> list[Span]:
    """Errors of a before-text: it is judged against many fills, so they are computed once (the last
    16 texts' kept in the cache budget, model/cache_budget.py)."""
    budget = shared_budget()
    found = budget.get(BEFORE_ERRORS_SPACE, (lang, text))
    if found is None:
        found = tuple(_error_spans(parsed(text, lang)))
        budget.put(BEFORE_ERRORS_SPACE, (lang, text), found, text_bytes(text) + 64 * (len(found) + 1), max_entries=16)
    return list(found)


def _error_spans(p: Parsed) -> list[Span]:
    """Outermost ERROR nodes, MISSING nodes (zero-width), and for Python empty blocks.

    Every node whose subtree holds an error is searched, ``has_error`` being the guide
    (it is set on the ancestors of MISSING nodes too). Some MISSING nodes are invisible:
    a missing hidden token, such as tree-sitter-python's ``_newline``, appears in no
    node's ``children`` and no TreeCursor visits it, yet it makes the tree an error tree.
    Those are found in the tree's S-expression, which lists every MISSING node.
    """
    out: list[Span] = _empty_python_blocks(p) if p.lang == "python" else []
    if not p.root.has_error:
        return sorted(out)
    visible_missing = 0
    error_nodes: list[tree_sitter.Node] = []
    stack = [p.root]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            out.append(p.span(node))
            if node.is_error:
                error_nodes.append(node)  # nested errors belong to this one
            else:
                visible_missing += 1
            continue
        stack.extend(c for c in reversed(node.children) if c.has_error or c.is_missing)
    sexp = str(p.root)
    listed = sexp.count("(MISSING ")
    if listed:
        inside_errors = sum(str(e).count("(MISSING ") for e in error_nodes)
        if listed > visible_missing + inside_errors:
            out += _hidden_missing(p, sexp)
    return sorted(out, key=lambda s: (s.start, s.end))


# Tokens of a tree's S-expression: a MISSING leaf (an anonymous token's name is quoted
# unescaped: `(MISSING """)`), an error leaf `(UNEXPECTED 'c')`, a node's opening, a
# closing parenthesis, a field name.
_SEXP_TOKEN = re.compile(
    r"""\(MISSING (?:".*?"|[^\s()]+)\)|\(UNEXPECTED (?:'\\?.'|[^\s()]+)\)|\([^\s()]+|\)|[^\s()]+"""
)


class _Mismatch(Exception):
    pass


def _sexp_children(node: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
    """The children an S-expression lists: named or missing, anonymous ones inlined."""
    for child in node.children:
        if child.is_named or child.is_missing:
            yield child
        else:
            yield from _sexp_children(child)


def _hidden_missing(p: Parsed, sexp: str) -> list[Span]:
    """Zero-width spans of the MISSING nodes the S-expression lists but no visible node
    is, outside ERROR nodes; each sits where the sibling before it ends."""
    toks = [m.group() for m in _SEXP_TOKEN.finditer(sexp)]
    found: list[int] = []

    def leaf(tok: str) -> bool:
        return tok.startswith(("(MISSING ", "(UNEXPECTED "))

    def skip(i: int) -> int:
        if leaf(toks[i]):
            return i + 1
        depth = 0
        while True:
            tok = toks[i]
            i += 1
            if tok == ")":
                depth -= 1
                if depth == 0:
                    return i
            elif tok.startswith("(") and not leaf(tok):
                depth += 1

    def match(node: tree_sitter.Node, i: int) -> int:
        tok = toks[i]
        if leaf(tok):
            return i + 1
        if tok[1:] != node.type:
            raise _Mismatch
        i += 1
        kids = list(_sexp_children(node))
        k, last_end = 0, node.start_byte
        while toks[i] != ")":
            tok = toks[i]
            if not tok.startswith("("):  # a field name
                i += 1
                continue
            if tok.startswith("(MISSING ") and not (k < len(kids) and kids[k].is_missing):
                found.append(last_end)  # hidden: no visible node stands for it
                i += 1
                continue
            if k >= len(kids):
                raise _Mismatch
            child = kids[k]
            k += 1
            if child.has_error and not child.is_error and not child.is_missing:
                i = match(child, i)
            else:
                i = skip(i)
            last_end = child.end_byte
        return i + 1

    try:
        match(p.root, 0)
    except (_Mismatch, IndexError, RecursionError):
        # Could not line the two up: report every node whose error none of its visible
        # children carries.
        return [p.span(n) for n in _bare_error_nodes(p.root)]
    to_char = p.offsets.to_char
    return [Span(to_char(b), to_char(b)) for b in found]


def _bare_error_nodes(root: tree_sitter.Node) -> list[tree_sitter.Node]:
    out, stack = [], [root]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            continue
        kids = [c for c in node.children if c.has_error or c.is_missing]
        if not kids:
            out.append(node)
        stack.extend(kids)
    return out


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
