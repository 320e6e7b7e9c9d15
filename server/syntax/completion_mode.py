"""Decide, before asking the model, whether to complete at the cursor and how much.

Rules, first match wins (offsets are str offsets, "line" is the cursor's line):

0. ``"line"`` when the cursor is at the start of a line that holds code after it (not inside a
   string or comment): the fill is whole lines inserted above that line, each ending with a
   newline, as many as the model writes (HumanEval-Infilling's holes sit exactly here: the
   prompt ends with a newline and the suffix starts with the next line).
1. ``"none"`` when a word character (letter, digit, ``_``) follows the cursor: we are in
   the middle or at the start of an identifier/number, and anything we insert would be
   glued onto it. Exception: Lua's ``end`` closing an empty block (rule 3b).
2. ``"single"`` inside a comment or a string literal (a line comment's end counts as
   inside; right after a closing quote or ``*/`` does not). Completing prose is useful
   (llm-ls does it too) but a block of code there is not. Code inside an f-string
   ``{...}`` or template ``${...}`` is not "inside a string".
3. ``"multi"`` at the start of a block:
   a. the line is blank (only whitespace around the cursor) and the previous non-blank
      line, ignoring a trailing comment, opens a block; or
   b. the text before the cursor opens a block and after the cursor there is nothing but
      whitespace or the block's own closer (``def f():|``, ``if (x) {|``, an empty body
      ``function f() {|}``, Lua ``then|`` / ``function f(a)|end``).
   A block opener (blocks.opens_block) is a trailing ``:`` with balanced brackets that
   is not a ``lambda``'s (Python), a trailing ``{`` (brace languages, Lua tables), or
   Lua ``then``/``do``/``else``/``repeat``/a ``function(...)`` header.
4. ``"multi"`` on a blank line inside a function body (for Python also a blank line just
   below a function's last statement, indented deeper than its ``def``).
5. ``"single"`` otherwise: text before the cursor on the line, text after it, or a blank
   line outside any function (module level, class body).
"""

from __future__ import annotations

from typing import Literal

from .blocks import opens_block
from .functions import enclosing_function
from .parsed import Parsed, parsed
from .span import line_start

CompletionMode = Literal["none", "single", "multi", "line"]

_STRING_TYPES = frozenset(
    {
        "string",
        "template_string",
        "interpreted_string_literal",
        "raw_string_literal",
        "string_literal",
        "char_literal",
    }
)
_CODE_IN_STRING_TYPES = frozenset({"interpolation", "template_substitution"})


def completion_mode(text: str, lang: str, offset: int) -> CompletionMode:
    offset = min(max(offset, 0), len(text))
    here = line_start(text, offset)
    nl = text.find("\n", offset)
    before = text[here:offset]
    after = text[offset : len(text) if nl < 0 else nl]
    if not before and after.strip() and not _in_comment_or_string(parsed(text, lang), offset):
        return "line"
    if after[:1] and _is_word_char(after[0]) and not (lang == "lua" and after.strip() == "end"):
        return "none"  # decided without a parse: this is most keystrokes
    p = parsed(text, lang)  # the same parse as above when there was one (parsed keeps the last few)
    if _in_comment_or_string(p, offset):
        return "single"
    if not before.strip() and not after.strip():
        if opens_block(_previous_code_line(p, here), lang):
            return "multi"
        if enclosing_function(p, offset) is not None:
            return "multi"
        return "single"
    if opens_block(before, lang) and after.strip() in ("", _closer(before, lang)):
        return "multi"
    return "single"


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _in_comment_or_string(p: Parsed, offset: int) -> bool:
    for node in reversed(p.path_at(offset)):
        if node.type in _CODE_IN_STRING_TYPES:
            return False
        is_comment = "comment" in node.type
        if not is_comment and node.type not in _STRING_TYPES:
            continue
        start, end = p.start(node), p.end(node)
        if start < offset < end:
            return True
        if is_comment and offset == end and not p.text[start:end].endswith(("*/", "]]")):
            return True  # end of a line comment: still typing the comment
        return False
    return False


def _previous_code_line(p: Parsed, start: int) -> str:
    """The last non-blank line above the line starting at ``start``, with a trailing comment cut off."""
    q = len(p.text[:start].rstrip())
    if q == 0:
        return ""
    for node in p.path_at(q):
        if "comment" in node.type and p.end(node) == q:
            q = len(p.text[: p.start(node)].rstrip())
            break
    return p.text[line_start(p.text, q) : q]


def _closer(before: str, lang: str) -> str:
    if before.rstrip().endswith("{"):
        return "}"
    return "end" if lang == "lua" else ""
