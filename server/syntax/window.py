"""Where syntax questions look in a document: windows that keep huge documents cheap, and the judge
of a fill's syntax errors that the model backends use to repair fills while denoising."""

from __future__ import annotations

from collections.abc import Callable

from .judge import added_errors, fill_offsets_after
from .parsed import TREE_BYTES
from .span import Span, line_start

# judge(fills) -> per fill, the character ranges (within that fill) that add syntax errors; the same
# shape as canvas_ls.model.interface.Judge (syntax/ does not import the model side).
Judge = Callable[[tuple[str, ...]], list[list[tuple[int, int]]]]

JUDGE_WINDOW = 20_000  # characters of context either side of the holes that syntax checks look at


def judge_window(text: str, holes: list[tuple[int, int]]) -> tuple[int, int]:
    """Window around the holes, so syntax checks stay fast on huge documents. It starts at a line that
    starts at column 0 (a top-level statement, where a parse can begin) and ends at a line end."""
    lo = max(0, holes[0][0] - JUDGE_WINDOW)
    hi = min(len(text), holes[-1][1] + JUDGE_WINDOW)
    while lo > 0:
        lo = line_start(text, lo)
        if lo == 0 or text[lo : lo + 1] not in (" ", "\t", "\n", "\r", "}", ")", "]"):
            break
        if holes[0][0] - lo > 4 * JUDGE_WINDOW:  # no top-level line near: take the plain line start
            break
        lo -= 1
    if hi < len(text):
        nl = text.find("\n", hi)
        hi = len(text) if nl == -1 else nl
    return lo, hi


def local_window(text: str, offset: int) -> tuple[str, int]:
    """(text, 0) for a document small enough to keep a tree of; for a larger one, the window around
    `offset` and where it starts, so a cursor's syntax questions never parse megabytes."""
    if len(text) <= TREE_BYTES:
        return text, 0
    lo, hi = judge_window(text, [(offset, offset)])
    return text[lo:hi], lo


def make_judge(text: str, holes: tuple[tuple[int, int], ...], lang: str) -> Judge:
    """judge(fills) -> per fill, the character ranges in it that add syntax errors.

    An error after a fill (it broke the code that follows) is charged to the fill's last character.
    """
    lo, hi = judge_window(text, holes)
    before = text[lo:hi]
    spans = [Span(s - lo, e - lo) for s, e in holes]

    def judge(fills: tuple[str, ...]) -> list[list[tuple[int, int]]]:
        pairs = list(zip(spans, fills))
        out: list[list[tuple[int, int]]] = [[] for _ in fills]
        errors = added_errors(before, pairs, lang)
        if not errors:
            return out
        where = fill_offsets_after(before, pairs)
        for err in errors:
            owner = 0
            for i, sp in enumerate(where):
                if sp.start <= err.start:
                    owner = i
            sp = where[owner]
            if err.start < sp.end:
                out[owner].append((err.start - sp.start, min(err.end, sp.end) - sp.start))
            else:
                n = len(fills[owner])
                out[owner].append((max(0, n - 1), n))
        return out

    return judge
