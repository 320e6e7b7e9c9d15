"""LSP positions (line + character in the negotiated encoding, UTF-16 by default) <-> str offsets."""

from __future__ import annotations

from bisect import bisect_right

from lsprotocol import types as t

from .pipeline import BadRequest


def _units(s: str, encoding: str) -> int:
    if encoding == "utf-8":
        return len(s.encode("utf-8", errors="surrogatepass"))
    if encoding == "utf-32":
        return len(s)
    return len(s.encode("utf-16-le", errors="surrogatepass")) // 2


def line_starts(text: str) -> list[int]:
    starts = [0]
    i = text.find("\n")
    while i != -1:
        starts.append(i + 1)
        i = text.find("\n", i + 1)
    return starts


def to_offset(text: str, line: int, character: int, encoding: str = "utf-16", starts=None) -> int:
    """Offset of an LSP position; BadRequest when it lies outside the document. `starts`: the text's
    line starts, when the caller keeps them (server/text_store.py's Document does)."""
    starts = starts if starts is not None else line_starts(text)
    if line < 0 or line >= len(starts) or character < 0:
        raise BadRequest(f"position {line}:{character} is outside the document ({len(starts)} lines)")
    begin = starts[line]
    end = starts[line + 1] - 1 if line + 1 < len(starts) else len(text)
    content = text[begin:end]
    chars = units_before(content, character, encoding)
    if _units(content[:chars], encoding) != character:
        if chars == len(content):
            raise BadRequest(f"position {line}:{character} is past the end of line {line} ({len(content)} characters)")
        raise BadRequest(f"position {line}:{character} splits a character")
    return begin + chars


def units_before(line: str, character: int, encoding: str) -> int:
    """How many characters of `line` lie within its first `character` units, clamped to the line."""
    if encoding == "utf-32" or line.isascii():
        return min(character, len(line))
    units = 0
    for i, ch in enumerate(line):
        units += _units(ch, encoding)
        if units > character:
            return i
    return len(line)


def to_position(text: str, offset: int, encoding: str = "utf-16", starts: list[int] | None = None) -> tuple[int, int]:
    starts = starts if starts is not None else line_starts(text)
    line = bisect_right(starts, offset) - 1
    return line, _units(text[starts[line] : offset], encoding)


def to_range(text: str, start: int, end: int, encoding: str, starts: list[int] | None = None) -> t.Range:
    """The LSP range of text[start:end]."""
    starts = starts if starts is not None else line_starts(text)
    a, b = to_position(text, start, encoding, starts), to_position(text, end, encoding, starts)
    return t.Range(start=t.Position(line=a[0], character=a[1]), end=t.Position(line=b[0], character=b[1]))
