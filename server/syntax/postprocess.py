"""Clean a raw model fill before it reaches the document: a pipeline of small pure filters.

Every filter is ``f(fill, ctx) -> str``. ``run_pipeline`` applies them in this order:

1. newlines are unified to ``\\n`` (fill and context) so the filters below can split on it;
2. ``drop_stray_characters``: control characters and U+FFFD the document does not hold;
3. ``single_line``: in single mode keep only the first line, and ``no_double_space``: no second
   space after one the cursor's line already ends with;
4. ``newline_after_held_line``: a multi-line fill right after a Python docstring (or a
   comment after a block's ``:`` or docstring) starts on a new line, never glued onto it;
5. ``drop_suffix_repeat``: the fill must not repeat what already follows the hole;
6. ``fix_indentation``: re-indent lines after the first to the surrounding block;
7. ``drop_suffix_repeat`` again: re-indented lines may now match the suffix exactly;
8. ``end_before_closer``: a ``}``/``end`` right after the hole keeps its own line;
9. ``trim_trailing_whitespace``;
10. ``whole_lines``: in line mode (cursor at a line's start) the fill ends with a newline, so the
    cursor's line stays a line of its own;
11. ``normalize_newlines``: back to the document's newline style.

The filters other than normalize_newlines expect ``\\n`` newlines; run_pipeline sees to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Callable, Literal

from .blocks import CLOSING_LINE, net_open, opens_block
from .indentation import columns, indent_unit, leading_ws, pad, restyle, space_step
from .parsed import TREE_BYTES, parsed
from .window import judge_window


@dataclass(frozen=True)
class FillContext:
    prefix: str  # document text before the hole
    suffix: str  # document text after the hole
    lang: str | None
    mode: Literal["single", "multi", "line"]


Filter = Callable[[str, FillContext], str]

_CLOSING_PUNCT = frozenset(")]}\"'`;,")
_OPENER_OF = {")": "(", "]": "[", "}": "{"}
_MAX_PUNCT_OVERLAP = 8
_WHITESPACE = re.compile(r"\s*")
_LOOKAHEAD_LINES = 64  # how far below the cursor to look for the next code line
_CLOSER_AHEAD = re.compile(r"[ \t]*(?:[}\])]|end\b)")


def normalize_newlines(fill: str, ctx: FillContext) -> str:
    """Unify the fill's newlines, then use the document's style (the newline nearest the
    hole decides; a document without any keeps ``\\n``)."""
    fill = _to_lf(fill)
    return fill.replace("\n", "\r\n") if _document_newline(ctx) == "\r\n" else fill


def single_line(fill: str, ctx: FillContext) -> str:
    """Single mode keeps text up to the first newline (possibly nothing)."""
    return fill.split("\n", 1)[0] if ctx.mode == "single" else fill


def whole_lines(fill: str, ctx: FillContext) -> str:
    """Line mode inserts whole lines above the cursor's line: a fill that ends inside a line
    gets its newline (the model ended the span there); trailing blank lines and one of blank
    lines only are dropped."""
    if ctx.mode != "line":
        return fill
    return fill.rstrip() + "\n" if fill.strip() else ""


def newline_after_held_line(fill: str, ctx: FillContext) -> str:
    """In multi mode, a Python fill whose hole starts right after a docstring-like string
    statement (or after a comment that follows a ``:`` or such a string on its line)
    starts with a newline: a function body span begins at the end of the docstring's
    line, and text glued there would become part of the docstring's statement (a
    docstring followed by `` + x`` or ``.strip()`` still parses) or of the comment."""
    if ctx.lang != "python" or ctx.mode != "multi" or not fill.split("\n", 1)[0].strip():
        return fill
    line = ctx.prefix[ctx.prefix.rfind("\n") + 1 :].rstrip(" \t")
    if not line.strip() or (not line.endswith(("'", '"')) and "#" not in line):
        return fill  # cheap test first: most holes are not after a string or a comment
    return "\n" + fill if _ends_held_line(ctx.prefix, ctx.suffix) else fill


def _ends_held_line(prefix: str, suffix: str) -> bool:
    q = len(prefix.rstrip(" \t"))
    if len(prefix) + len(suffix) > TREE_BYTES:  # a big document: the window around the hole, never the whole
        text = prefix + suffix
        lo, hi = judge_window(text, [(len(prefix), len(prefix))])
        prefix, suffix, q = text[lo : len(prefix)], text[len(prefix) : hi], q - lo
    p = parsed(prefix + suffix, "python")
    path = p.path_at(q)
    node = path[-1] if path else None
    if node is None or p.end(node) != q:
        return False
    if node.type == "comment":
        before = node.prev_sibling
        if before is None or p.text.count("\n", p.end(before), p.start(node)):
            return False
        return before.type == ":" or _is_string_statement(before)
    while node is not None and p.end(node) == q:
        if _is_string_statement(node):
            return True
        node = node.parent
    return False


def _is_string_statement(node) -> bool:
    return (
        node.type == "expression_statement"
        and node.named_child_count == 1
        and node.named_children[0].type in ("string", "concatenated_string")
    )


def drop_suffix_repeat(fill: str, ctx: FillContext) -> str:
    """Remove a tail of the fill that repeats the start of the suffix.

    * the whole fill is the suffix's beginning (up to whitespace, ending on a token
      boundary) -> "";
    * the fill's last lines equal the suffix's first non-blank lines -> drop them, unless
      that would leave brackets the fill itself opened unclosed. Full lines are compared
      with their indentation (so an inner ``}`` does not match the outer one); the fill's
      first line and the rest of the cursor's line, whose columns are not comparable,
      are compared stripped;
    * closing punctuation at the fill's end that the suffix starts with (``foo(x)`` +
      ``)``) -> drop it when the fill does not need it itself (more closers than openers,
      an odd number of quotes; ``;`` and ``,`` are always doubled).
    """
    if not fill.strip():
        return fill
    core = fill.strip()
    ahead = _WHITESPACE.match(ctx.suffix).end()  # no lstrip(): the suffix may be huge
    if _repeats_suffix_start(core, ctx.suffix[ahead : ahead + len(core) + 1]):
        return ""
    fill = _drop_repeated_lines(fill, ctx.suffix)
    return _drop_doubled_punctuation(fill, ctx.suffix)


def fix_indentation(fill: str, ctx: FillContext) -> str:
    """Re-indent the lines after the first (the first continues the cursor's line).

    Their leading whitespace is first rewritten in the document's style (tabs or spaces).
    Then all of them shift right by the same amount, which keeps the fill's relative
    indentation, when the fill's reference line sits left of the block it belongs to.
    Lines are never shifted left: we cannot tell a deliberate dedent from a wrong one.

    * A fill that starts a new line (its first line is blank: ``def f():|``, a function
      body span) is new content of the cursor's block, so its first non-blank line must
      reach the block's indentation: the cursor line's indentation, plus one unit after a
      block opener (``:``, ``{``, ``then``, ... or an open ``(``/``[``).
    * A fill that starts with text continues the cursor's line, and only its least
      indented following line must reach the block's indentation; here the block's
      indentation is lowered to that of the next non-blank suffix line (one level deeper
      if that line is a closer) when that is less, since such a fill may legitimately
      end the block the cursor is in.

    Closing lines (``}``, ``end``, ``else``, ...) sit one level out, so they never serve as
    the reference line unless the fill has nothing else.
    """
    lines = fill.split("\n")
    if len(lines) == 1:
        return fill
    step = space_step(lines[1:])
    unit = indent_unit(ctx.prefix, ctx.suffix, ctx.lang) or " " * (step or 4)
    step = step or (len(unit) if unit != "\t" else 4)
    rest = [restyle(leading_ws(line), unit, step) + line.lstrip(" \t") if line.strip() else line for line in lines[1:]]
    body = [line for line in rest if line.strip() and not CLOSING_LINE.match(line.lstrip())]
    body = body or [line for line in rest if line.strip()]
    if not body:
        return "\n".join([lines[0], *rest])
    starts_new_line = not lines[0].strip()
    reference = body[0] if starts_new_line else min(body, key=lambda line: columns(leading_ws(line), unit))
    need = _block_columns(ctx, unit, lower_to_suffix=not starts_new_line)
    need -= columns(leading_ws(reference), unit)
    if need > 0:
        rest = [pad(need, unit) + line if line.strip() else line for line in rest]
    return "\n".join([lines[0], *rest])


def end_before_closer(fill: str, ctx: FillContext) -> str:
    """Give the closer right after the hole its own line back.

    A function body span ends right before ``}``/``end`` (and ``{|}`` has the cursor
    there), so a multi-line fill must end with a line break plus the indentation of the
    line the fill started on, where the block opened; otherwise the closer is glued to the
    fill's last line. Single-line fills (``{ return 1; }``) are left alone.
    """
    line = ctx.prefix[ctx.prefix.rfind("\n") + 1 :]
    if "\n" not in fill or not line.strip() or not _CLOSER_AHEAD.match(ctx.suffix):
        return fill
    head, _, last = fill.rpartition("\n")
    if last.strip():
        head = fill
    return head + "\n" + leading_ws(line)


def trim_trailing_whitespace(fill: str, ctx: FillContext) -> str:
    """Strip trailing whitespace from each line; the last line keeps it when text follows
    on the same line (it may be the space before that text, or the indentation of the
    suffix's line). When the suffix starts with a newline, trailing blank lines go too."""
    lines = fill.split("\n")
    text_follows = bool(ctx.suffix.split("\n", 1)[0].strip())
    last = lines[-1] if text_follows else lines[-1].rstrip()
    fill = "\n".join([*(line.rstrip() for line in lines[:-1]), last])
    if re.match(r"[ \t]*\r?\n", ctx.suffix):
        fill = fill.rstrip()
    return fill


# C0 controls other than tab/newline/carriage return, and U+FFFD: byte-level tokens that hold part of
# a UTF-8 character decode to U+FFFD on their own, and control bytes are never what the user wants
# inserted (unless their document already holds that character).
_STRAY = frozenset({chr(c) for c in range(32) if chr(c) not in "\t\n\r"} | {"\ufffd"})


def drop_stray_characters(fill: str, ctx: FillContext) -> str:
    """Drop control characters and U+FFFD, unless the document itself holds that character."""
    bad = {c for c in set(fill) & _STRAY if c not in ctx.prefix and c not in ctx.suffix}
    return "".join(c for c in fill if c not in bad) if bad else fill


def no_double_space(fill: str, ctx: FillContext) -> str:
    """`return ` + `" case"` is `return  " case"`: when the cursor's line already ends with a space or
    tab, the fill's leading spaces on that line go (its indentation on later lines stays)."""
    line_start = ctx.prefix.rfind("\n") + 1
    before = ctx.prefix[line_start:]
    if before.strip() and before[-1:] in (" ", "\t") and fill[:1] in (" ", "\t"):
        return fill.lstrip(" \t")
    return fill


PIPELINE: tuple[Filter, ...] = (
    drop_stray_characters,
    single_line,
    no_double_space,
    newline_after_held_line,
    drop_suffix_repeat,
    fix_indentation,
    drop_suffix_repeat,
    end_before_closer,
    trim_trailing_whitespace,
    whole_lines,
)


def run_pipeline(fill: str, ctx: FillContext, disabled: frozenset[str] = frozenset()) -> str:
    """The filters in order; `disabled` names filters to skip (the disabledFilters setting, so a
    benchmark can show what each one earns)."""
    lf_ctx = replace(ctx, prefix=_to_lf(ctx.prefix), suffix=_to_lf(ctx.suffix))
    fill = _to_lf(fill)
    for step in PIPELINE:
        if step.__name__ not in disabled:
            fill = step(fill, lf_ctx)
    return normalize_newlines(fill, ctx)


def _to_lf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _document_newline(ctx: FillContext) -> str:
    before = ctx.prefix.rfind("\n")
    if before >= 0:
        return "\r\n" if ctx.prefix[before - 1 : before] == "\r" else "\n"
    after = ctx.suffix.find("\n")
    if after >= 0:
        return "\r\n" if ctx.suffix[after - 1 : after] == "\r" else "\n"
    return "\n"


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _repeats_suffix_start(core: str, suffix: str) -> bool:
    if not suffix.startswith(core):
        return False
    # `x` before `xs` is not a repeat: the match must end on a token boundary.
    following = suffix[len(core) : len(core) + 1]
    return not (following and _is_word_char(core[-1]) and _is_word_char(following))


def _drop_repeated_lines(fill: str, suffix: str) -> str:
    lines = fill.split("\n")
    fill_rows = [(i, line) for i, line in enumerate(lines) if line.strip()]
    head = suffix.split("\n", 2 * len(lines) + 8)[: 2 * len(lines) + 8]  # enough to compare
    suffix_rows = [(j, line) for j, line in enumerate(head) if line.strip()]
    for k in range(min(len(fill_rows), len(suffix_rows)), 0, -1):
        pairs = zip(fill_rows[-k:], suffix_rows[:k])
        if all(_same_line(fi, fl, sj, sl) for (fi, fl), (sj, sl) in pairs):
            first = fill_rows[-k][0]
            kept = "\n".join(lines[:first])
            if suffix_rows[0][0] == 0:
                # The repeated text follows the cursor on its line (`{|}`): keep the
                # fill's line break and indentation so it lands on a line of its own.
                kept += "\n" + leading_ws(lines[first])
            if net_open(kept) <= max(net_open(fill), 0):
                return kept
    return fill


def _same_line(fill_row: int, fill_line: str, suffix_row: int, suffix_line: str) -> bool:
    if fill_row == 0 or suffix_row == 0:  # partial lines: columns unknown
        return fill_line.strip() == suffix_line.strip()
    return fill_line.rstrip() == suffix_line.rstrip()


def _drop_doubled_punctuation(fill: str, suffix: str) -> str:
    core = fill.rstrip(" \t")
    following = suffix.lstrip(" \t")
    for k in range(min(len(core), _MAX_PUNCT_OVERLAP), 0, -1):
        tail = core[-k:]
        if set(tail) <= _CLOSING_PUNCT and following.startswith(tail) and _spare(core, tail):
            return core[:-k]
    return fill


def _spare(fill: str, tail: str) -> bool:
    """Can ``fill`` lose ``tail`` without breaking its own brackets and quotes?"""
    for ch in set(tail):
        if ch in _OPENER_OF:
            if fill.count(ch) - fill.count(_OPENER_OF[ch]) < tail.count(ch):
                return False
        elif ch in "\"'`" and fill.count(ch) % 2 == 0:
            return False
    return True


def _block_columns(ctx: FillContext, unit: str, lower_to_suffix: bool) -> int:
    line = ctx.prefix[ctx.prefix.rfind("\n") + 1 :]
    own = columns(line if not line.strip() else leading_ws(line), unit)
    code = _without_line_comment(line, ctx.lang).rstrip()
    if code and (opens_block(code, ctx.lang) or code.endswith(("(", "["))):
        return own + columns(unit, unit)
    below = next((row for row in ctx.suffix.split("\n", _LOOKAHEAD_LINES)[1:_LOOKAHEAD_LINES] if row.strip()), None)
    if not lower_to_suffix or below is None:
        return own
    # a closing line below (`}`, `end`) sits one level left of the block it closes
    closes = bool(CLOSING_LINE.match(below.lstrip()))
    return min(own, columns(leading_ws(below), unit) + (columns(unit, unit) if closes else 0))


_LINE_COMMENT = {
    "python": "#",
    "lua": "--",
    "javascript": "//",
    "typescript": "//",
    "tsx": "//",
    "go": "//",
    "rust": "//",
}


def _without_line_comment(line: str, lang: str | None) -> str:
    """``line`` without a trailing line comment (``def f():  # note`` still opens a block);
    lexical: a marker counts when the quotes before it are balanced."""
    marker = _LINE_COMMENT.get(lang or "")
    if not marker or marker not in line:
        return line
    at = line.find(marker)
    while at >= 0:
        head = line[:at]
        if all(head.count(q) % 2 == 0 for q in "\"'`"):
            return head
        at = line.find(marker, at + 1)
    return line
