"""Indentation style of a document (tabs or N spaces) and conversion into it."""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

_LEADING = re.compile(r"[ \t]*")
_SCAN_CHARS = 40_000  # style is local and stable: a window around the cursor is plenty


def leading_ws(line: str) -> str:
    return _LEADING.match(line).group()


def indent_unit(prefix: str, suffix: str, lang: str | None) -> str | None:
    """One indentation level of the document around the cursor: "\\t" or some spaces;
    None when nothing is indented there (the caller then trusts the fill's own style)."""
    lines = (prefix[-_SCAN_CHARS:] + suffix[:_SCAN_CHARS]).split("\n")
    tabbed = sum(1 for line in lines if line.startswith("\t"))
    spaced = sum(1 for line in lines if line.startswith(" ") and line.strip())
    if tabbed > spaced or (tabbed == spaced == 0 and lang == "go"):  # gofmt uses tabs
        return "\t"
    step = space_step(lines)
    return " " * step if step else None


def space_step(lines: Iterable[str]) -> int | None:
    """Most common change of indentation between consecutive non-blank lines (ties: the
    smaller); with all lines at one width, that width. None if nothing is indented."""
    widths = [len(leading_ws(line).expandtabs(4)) for line in lines if line.strip()]
    steps = Counter(abs(b - a) for a, b in zip(widths, widths[1:]) if a != b)
    if steps:
        return min(steps, key=lambda step: (-steps[step], step))
    return widths[0] if widths and widths[0] else None


def columns(ws: str, unit: str) -> int:
    return len(ws.expandtabs(_tab_size(unit)))


def pad(cols: int, unit: str) -> str:
    """Whitespace at least ``cols`` wide in the document's style."""
    if unit == "\t":
        return "\t" * -(-cols // _tab_size(unit))
    return " " * cols


def restyle(ws: str, unit: str, fill_step: int) -> str:
    """Rewrite leading whitespace ``ws`` of fill text in the document's style: spaces become
    tabs (``fill_step`` spaces per level) in a tab document, tabs become ``unit`` in a
    spaces document. Widths are not rescaled otherwise."""
    if unit == "\t":
        levels, rest = divmod(len(ws.replace("\t", " " * fill_step)), fill_step)
        return "\t" * levels + " " * rest
    return ws.replace("\t", unit)


def _tab_size(unit: str) -> int:
    return 4 if unit == "\t" else len(unit)
