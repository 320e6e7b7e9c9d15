"""The one value type every syntax helper speaks: a half-open range of str offsets."""

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
