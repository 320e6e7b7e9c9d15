"""The one value type every syntax helper speaks (a half-open range of str offsets), and the one
definition of "the current line"."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Span:
    """Characters ``text[start:end]`` of a document (Python str offsets, end exclusive)."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"bad span {self.start}..{self.end}")

    @property
    def length(self) -> int:
        # Not __len__: an empty span (an insertion point) must still be truthy.
        return self.end - self.start

    def touches(self, other: Span) -> bool:
        """Overlap with both ends inclusive, so empty spans (insertion points, MISSING
        nodes) still meet the ranges they sit on."""
        return self.start <= other.end and other.start <= self.end


def line_start(text: str, offset: int) -> int:
    """Where the line holding `offset` starts."""
    return text.rfind("\n", 0, offset) + 1


def line_span(text: str, offset: int) -> Span:
    """The line holding `offset`, without its line break (\\n or \\r\\n)."""
    start = line_start(text, offset)
    end = text.find("\n", offset)
    end = len(text) if end == -1 else end
    if end > start and text[end - 1] == "\r":
        end -= 1
    return Span(start, end)
