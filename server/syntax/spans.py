"""Spans a fill can target: the current line, the current statement, the current function body.

``function_body`` lives in functions.py and ``completion_mode`` in completion_mode.py; both
are re-exported here so callers find every span helper in one place.
"""

from __future__ import annotations

from .completion_mode import completion_mode
from .functions import function_body
from .parsed import parsed
from .span import Span

__all__ = ["Span", "completion_mode", "function_body", "line_span", "statement_span"]

_JS_CONTAINERS = frozenset({"program", "statement_block", "class_body", "switch_case", "switch_default"})

# Nodes whose children are statements; a statement is a named child of one of these.
STATEMENT_CONTAINERS: dict[str, frozenset[str]] = {
    "python": frozenset({"module", "block"}),
    "javascript": _JS_CONTAINERS,
    "typescript": _JS_CONTAINERS,
    "tsx": _JS_CONTAINERS,
    "go": frozenset({"source_file", "block", "statement_list", "expression_case", "type_case",
                     "default_case", "communication_case"}),
    "rust": frozenset({"source_file", "block", "declaration_list"}),
    "lua": frozenset({"chunk", "block"}),
}


def line_span(text: str, offset: int) -> Span:
    """The line holding ``offset``, without its line terminator (``\\n`` or ``\\r\\n``)."""
    offset = min(max(offset, 0), len(text))
    start = text.rfind("\n", 0, offset) + 1
    nl = text.find("\n", offset)
    end = len(text) if nl < 0 else nl
    if end > start and text[end - 1] == "\r":
        end -= 1
    return Span(start, max(start, end))


def statement_span(text: str, lang: str, offset: int) -> Span | None:
    """The innermost statement-level node containing ``offset`` (a cursor right after a
    statement's last character still counts as in it); None between statements."""
    p = parsed(text, lang)
    containers = STATEMENT_CONTAINERS[lang]
    path = p.path_at(offset)
    for parent, node in reversed(list(zip(path, path[1:]))):
        if parent.type in containers and node.is_named and node.type not in containers:
            return p.span(node)
    return None
