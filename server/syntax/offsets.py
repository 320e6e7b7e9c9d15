"""Map between str character offsets and the UTF-8 byte offsets tree-sitter reports.

Only non-ASCII characters make the two differ, so we remember where those are and
bisect; ASCII documents (the common case) take the identity fast path.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from itertools import accumulate

_NON_ASCII = re.compile(r"[^\x00-\x7f]")


class Offsets:
    __slots__ = ("_chars", "_bytes", "_extra", "n_chars", "n_bytes")

    def __init__(self, text: str) -> None:
        self.n_chars = len(text)
        wide = [(m.start(), len(m.group().encode("utf-8")) - 1) for m in _NON_ASCII.finditer(text)]
        self._chars = [i for i, _ in wide]  # char index of each non-ASCII char
        # _extra[k]: bytes beyond one-per-char contributed by the first k non-ASCII chars
        self._extra = [0, *accumulate(e for _, e in wide)]
        self._bytes = [i + self._extra[k] for k, i in enumerate(self._chars)]
        self.n_bytes = self.n_chars + self._extra[-1]

    def to_byte(self, char: int) -> int:
        char = min(max(char, 0), self.n_chars)
        return char + self._extra[bisect_left(self._chars, char)]

    def to_char(self, byte: int) -> int:
        byte = min(max(byte, 0), self.n_bytes)
        return byte - self._extra[bisect_left(self._bytes, byte)]
