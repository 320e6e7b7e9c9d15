"""Find the function around the cursor and the part of it a fill may regenerate.

The body span is everything after the held part (signature, plus a Python docstring) up
to the closing delimiter, so a fill of the span never touches what the user wrote as the
function's contract:

* brace languages (JS/TS, Go, Rust): strictly between ``{`` and ``}``;
* Lua: from right after the parameter list's ``)`` to right before ``end``;
* Python: from the end of the line holding the ``:`` (or the docstring) to the end of the
  block. The span therefore starts with the newline and includes the first body line's
  indentation, exactly like the brace languages: every regenerated line carries its own
  indentation, which fix_indentation can then check. A comment on the ``def`` line (or on
  the docstring's line) stays held; a one-line body (``def f(): return 1``) starts right
  after the ``:``. A function holding only a docstring gets an empty span at the end of
  the docstring's line. A fill of a span that starts at the end of a docstring's line
  must start with a newline, or its text would be glued onto the docstring (the docstring
  followed by ``+ x`` or ``.strip()`` still parses): postprocess.newline_after_held_line
  sees to it.
"""

from __future__ import annotations

import tree_sitter

from .parsed import Parsed, parsed
from .span import Span, line_start

_JS_FUNCTIONS = frozenset(
    {
        "function_declaration",
        "function_expression",
        "function",
        "generator_function_declaration",
        "generator_function",
        "method_definition",
        "arrow_function",
    }
)

FUNCTION_TYPES: dict[str, frozenset[str]] = {
    "python": frozenset({"function_definition"}),
    "javascript": _JS_FUNCTIONS,
    "typescript": _JS_FUNCTIONS,
    "tsx": _JS_FUNCTIONS,
    "go": frozenset({"function_declaration", "method_declaration", "func_literal"}),
    "rust": frozenset({"function_item", "closure_expression"}),
    "lua": frozenset({"function_declaration", "function_definition"}),
}


def function_body(text: str, lang: str, offset: int) -> Span | None:
    """Body span of the innermost function (with a block body) enclosing ``offset``."""
    found = enclosing_function(parsed(text, lang), offset)
    return found[1] if found else None


def enclosing_function(p: Parsed, offset: int) -> tuple[tree_sitter.Node, Span] | None:
    """Innermost function around ``offset`` that has a block body, with that body's span."""
    if p.lang == "python":
        found = _python_by_indentation(p, offset)
        if found:
            return found
    for node in reversed(p.path_at(offset)):
        if node.is_named and node.type in FUNCTION_TYPES[p.lang] and _encloses(p, node, offset):
            body = body_span(p, node)
            if body is not None:
                return node, body
    return None


def body_span(p: Parsed, fn: tree_sitter.Node) -> Span | None:
    """The regenerable part of function node ``fn`` (see module docstring), None if it has no block."""
    if p.lang == "python":
        return _python_body(p, fn)
    if p.lang == "lua":
        return _lua_body(p, fn)
    body = fn.child_by_field_name("body")
    if body is None or body.child_count == 0 or body.children[0].type != "{":
        return None  # arrow function / closure with an expression body
    start = p.end(body.children[0])
    close = body.children[-1]
    end = p.start(close) if close.type == "}" and not close.is_missing else p.end(body)
    return Span(start, max(start, end))


def _encloses(p: Parsed, node: tree_sitter.Node, offset: int) -> bool:
    start, end = p.start(node), p.end(node)
    if start < offset < end:
        return True
    # Right after a closing `}`/`end` the cursor is outside; after a Python body's last
    # token (no closing delimiter) it is still inside.
    return offset == end and not _is_closed(node)


def _is_closed(node: tree_sitter.Node) -> bool:
    while node.child_count:
        node = node.children[-1]
    return node.type in ("}", "end") and not node.is_missing


def _lua_body(p: Parsed, fn: tree_sitter.Node) -> Span | None:
    params = fn.child_by_field_name("parameters")
    close = fn.children[-1] if fn.child_count else None
    if params is None or close is None or close.type != "end":
        return None
    start = p.end(params)
    end = p.start(close) if not close.is_missing else p.end(fn)
    return Span(start, max(start, end))


def _python_body(p: Parsed, fn: tree_sitter.Node) -> Span | None:
    block = fn.child_by_field_name("body")
    colons = [c for c in fn.children if c.type == ":"]
    if block is None or not colons:
        return None
    held_end = p.end(colons[-1])
    rest = [c for c in block.children if p.start(c) >= held_end]
    first = next((c for c in rest if c.type != "comment"), None)
    if first is not None and _is_docstring(first):
        held_end = p.end(first)
        rest = [c for c in rest if p.start(c) >= held_end]
    line_end = _line_end(p.text, held_end)
    same_line = [c for c in rest if p.start(c) < line_end]
    if same_line and not all(c.type == "comment" for c in same_line):
        start = held_end  # body continues on the held line: `def f(): return 1`
    else:
        start = line_end  # a comment after the `:` or the docstring stays held
        rest = [c for c in rest if p.start(c) >= line_end]
    end = p.end(block) if rest else start
    return Span(start, max(start, end))


def _is_docstring(node: tree_sitter.Node) -> bool:
    return (
        node.type == "expression_statement"
        and node.named_child_count == 1
        and node.named_children[0].type in ("string", "concatenated_string")
    )


def _line_end(text: str, offset: int) -> int:
    nl = text.find("\n", offset)
    end = len(text) if nl < 0 else nl
    return end - 1 if end > offset and text[end - 1] == "\r" else end


def _python_by_indentation(p: Parsed, offset: int) -> tuple[tree_sitter.Node, Span] | None:
    """On a blank line below a Python function the tree has already closed the function,
    but the cursor's indentation says which one it belongs to: the innermost function
    ending just above whose ``def`` is indented less than the cursor."""
    here = line_start(p.text, offset)
    column = p.text[here:offset]
    if column.strip() or not column:
        return None
    q = len(p.text[:here].rstrip())
    if q == 0:
        return None
    for node in reversed(p.path_at(q)):
        # Every function on this path ends at q or runs past the cursor: both enclose it.
        if node.type not in FUNCTION_TYPES["python"]:
            continue
        def_start = p.start(node)
        def_indent = p.text[line_start(p.text, def_start) : def_start]
        if len(def_indent.expandtabs(8)) < len(column.expandtabs(8)):
            body = body_span(p, node)
            if body is not None:
                return node, body
    return None
