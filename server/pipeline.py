"""From a document and a cursor/selection to edits: the part of a fill that knows about code.

LSP-free, so the CLI, the server and the benchmarks share it:
  1. decide before calling the model whether and how much to fill (tree-sitter at the cursor),
  2. ask the model for the holes (with a syntax judge it uses to repair fills that add errors),
  3. post-process each fill (pure filters in syntax/postprocess.py),
  4. check the final text adds no syntax errors; as a last resort cut it at a syntax boundary.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from canvas_ls.model.interface import BadFill, Cancelled, Filler, FillRequest, FillResult, Judge, OnStep

from .settings import ServerSettings
from .syntax import (
    FillContext,
    Span,
    added_errors,
    completion_mode,
    cut_at_syntax_boundary,
    fill_offsets_after,
    function_body,
    run_pipeline,
)
from .syntax.parsed import TREE_BYTES
from .syntax.span import line_start

log = logging.getLogger("canvas_ls.pipeline")

JUDGE_WINDOW = 20_000  # characters of context either side of the holes that syntax checks look at


class BadRequest(ValueError):
    """The request cannot be served as asked; the message tells the user why."""


@dataclass(frozen=True)
class Edit:
    start: int  # character offsets into the document the fill was computed for
    end: int
    text: str


@dataclass(frozen=True)
class FillOutcome:
    edits: tuple[Edit, ...]
    mode: str  # "single", "multi", "body", "selection" or "none"
    result: FillResult | None = None
    note: str = ""  # why there is no edit, when there is none


def check_document(text: str, settings: ServerSettings) -> None:
    size = len(text) if text.isascii() else len(text.encode("utf-8", errors="surrogatepass"))
    if size > settings.maxDocumentBytes:
        raise BadRequest(f"document is {size:,} bytes; canvas-ls fills documents up to {settings.maxDocumentBytes:,} bytes (setting maxDocumentBytes)")
    if "\x00" in text:
        raise BadRequest("document holds NUL bytes: it looks binary, and canvas-ls fills text only")


def _window(text: str, holes: list[tuple[int, int]]) -> tuple[int, int]:
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
    lo, hi = _window(text, [(offset, offset)])
    return text[lo:hi], lo


def make_judge(text: str, holes: tuple[tuple[int, int], ...], lang: str) -> Judge:
    """judge(fills) -> per fill, the character ranges in it that add syntax errors.

    An error after a fill (it broke the code that follows) is charged to the fill's last character.
    """
    lo, hi = _window(text, holes)
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


def _finish(text: str, holes: list[tuple[int, int]], fills: tuple[str, ...], lang: str | None, mode: str,
            disabled: frozenset[str] = frozenset()) -> tuple[list[Edit], str]:
    """Post-process each fill, then make sure none adds syntax errors."""
    edits, notes = [], []
    for (start, end), raw in zip(holes, fills):
        ctx = FillContext(prefix=text[:start], suffix=text[end:], lang=lang, mode="single" if mode == "single" else "multi")
        fill = run_pipeline(raw, ctx, disabled)
        if lang is not None and fill:
            lo, hi = _window(text, [(start, end)])
            span = Span(start - lo, end - lo)
            if added_errors(text[lo:hi], [(span, fill)], lang):
                fill = cut_at_syntax_boundary(text[lo:hi], span, fill, lang)
                notes.append("cut at a syntax boundary")
        if not fill.strip():
            notes.append("no fill survived post-processing and the syntax checks")
            continue
        edits.append(Edit(start, end, fill))
    return edits, "; ".join(notes)


def run_fill(
    filler: Filler,
    text: str,
    holes: list[tuple[int, int]],
    lang: str | None,
    mode: str,
    slots: tuple[int, ...],
    settings: ServerSettings,
    *,
    document: str | None = None,
    on_step: OnStep | None = None,
    cancelled: Cancelled | None = None,
) -> FillOutcome:
    """Fill `holes`; callers have run check_document (the entry points below do, before parsing)."""
    request = FillRequest(
        text=text,
        holes=tuple(holes),
        max_tokens=max(slots),
        length_candidates=tuple(slots) if len(holes) == 1 and len(slots) > 1 else (),
        settings=settings.sampler_settings(),
        document=document,
        language=lang,
        decoder=settings.decoder,  # type: ignore[arg-type]
        single_line=mode == "single",
    )
    try:
        request.validate()
        result = filler.fill(request, on_step=on_step, cancelled=cancelled)
    except BadFill as exc:
        raise BadRequest(str(exc)) from exc
    edits, note = _finish(text, holes, result.fills, lang, mode, frozenset(settings.disabledFilters))
    log.debug("fill %s: %d edits, %d passes, %.3fs %s", mode, len(edits), result.forward_passes, result.seconds, note)
    return FillOutcome(tuple(edits), mode, result, note)


def check_span(text: str, start: int, end: int) -> None:
    """The one check that character offsets lie in the document (positions were converted before)."""
    if not 0 <= start <= end <= len(text):
        what = f"position (offset {start})" if start == end else f"range ({start}, {end})"
        raise BadRequest(f"{what} is outside the document (length {len(text)})")


def plan_at_cursor(text: str, offset: int, lang: str | None, settings: ServerSettings) -> tuple[str, tuple[int, ...]]:
    """(mode, slot counts) for a completion at the cursor; mode "none" means do not call the model."""
    check_span(text, offset, offset)
    if lang is None:
        # No grammar: single line unless the cursor's line is empty.
        here = line_start(text, offset)
        line_end = text.find("\n", offset)
        line = text[here : len(text) if line_end == -1 else line_end]
        mode = "multi" if not line.strip() else "single"
    else:
        local, base = local_window(text, offset)
        mode = completion_mode(local, lang, offset - base)
    if mode == "none":
        return mode, ()
    return mode, tuple(settings.singleLineSlots if mode == "single" else settings.multiLineSlots)


def complete_at(filler: Filler, text: str, offset: int, lang: str | None, settings: ServerSettings, **kw) -> FillOutcome:
    check_document(text, settings)
    mode, slots = plan_at_cursor(text, offset, lang, settings)
    if mode == "none":
        return FillOutcome((), "none", note="nothing to complete here (cursor inside a word)")
    return run_fill(filler, text, [(offset, offset)], lang, mode, slots, settings, **kw)


def fill_selections(filler: Filler, text: str, spans: list[tuple[int, int]], lang: str | None, settings: ServerSettings, **kw) -> FillOutcome:
    check_document(text, settings)
    if not spans:
        raise BadRequest("no range to fill")
    spans = sorted(spans)
    for (a0, a1), (b0, _) in zip(spans, spans[1:]):
        if b0 < a1:
            raise BadRequest("the ranges to fill overlap")
    for s, e in spans:
        check_span(text, s, e)
    return run_fill(filler, text, spans, lang, "selection", tuple(settings.multiLineSlots), settings, **kw)


def fill_body(filler: Filler, text: str, offset: int, lang: str | None, settings: ServerSettings, **kw) -> FillOutcome:
    check_document(text, settings)
    if lang is None:
        raise BadRequest("fillBody needs a grammar to find the function; this language is not supported (python, javascript, typescript, tsx, go, rust, lua are)")
    check_span(text, offset, offset)
    body = body_at(text, lang, offset)
    if body is None:
        raise BadRequest("the cursor is not inside a function")
    return run_fill(filler, text, [body], lang, "body", (settings.bodySlots,), settings, **kw)


def body_at(text: str, lang: str, offset: int) -> tuple[int, int] | None:
    """The (start, end) of the body of the function around `offset`, or None."""
    local, base = local_window(text, offset)
    body = function_body(local, lang, offset - base)
    return (base + body.start, base + body.end) if body is not None else None
