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

from canvas_ls.model.interface import BadFill, Cancelled, Filler, FillRequest, FillResult, OnStep

from .settings import ServerSettings
from .syntax import (
    FillContext,
    Span,
    added_errors,
    completion_mode,
    cut_at_syntax_boundary,
    function_body,
    run_pipeline,
)
from .syntax.span import line_span
from .syntax.window import judge_window, local_window, make_judge  # noqa: F401  (make_judge: the backends' judge factory)

log = logging.getLogger("canvas_ls.pipeline")


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
    mode: str  # "single", "multi", "line", "body", "selection" or "none"
    result: FillResult | None = None
    note: str = ""  # why there is no edit, when there is none


def check_document(text: str, settings: ServerSettings) -> None:
    size = len(text) if text.isascii() else len(text.encode("utf-8", errors="surrogatepass"))
    if size > settings.maxDocumentBytes:
        raise BadRequest(
            f"document is {size:,} bytes; canvas-ls fills documents up to {settings.maxDocumentBytes:,} bytes (setting maxDocumentBytes)"
        )
    if "\x00" in text:
        raise BadRequest("document holds NUL bytes: it looks binary, and canvas-ls fills text only")


def _finish(
    text: str,
    holes: list[tuple[int, int]],
    fills: tuple[str, ...],
    lang: str | None,
    mode: str,
    disabled: frozenset[str] = frozenset(),
) -> tuple[list[Edit], str]:
    """Post-process each fill, then make sure none adds syntax errors."""
    edits, notes = [], []
    for (start, end), raw in zip(holes, fills):
        ctx = FillContext(
            prefix=text[:start], suffix=text[end:], lang=lang, mode=mode if mode in ("single", "line") else "multi"
        )
        fill = run_pipeline(raw, ctx, disabled)
        if lang is not None and fill:
            lo, hi = judge_window(text, [(start, end)])
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
        settings=settings.sampler_settings(mode),
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
        # No grammar: whole lines at a line's start with text after it, else single line unless the
        # cursor's line is empty.
        line = line_span(text, offset)
        if offset == line.start and text[line.start : line.end].strip():
            mode = "line"
        else:
            mode = "multi" if not text[line.start : line.end].strip() else "single"
    else:
        local, base = local_window(text, offset)
        mode = completion_mode(local, lang, offset - base)
    if mode == "none":
        return mode, ()
    slots = {"single": settings.singleLineSlots, "line": settings.lineSlots}.get(mode, settings.multiLineSlots)
    return mode, tuple(slots)


def complete_at(
    filler: Filler, text: str, offset: int, lang: str | None, settings: ServerSettings, **kw
) -> FillOutcome:
    check_document(text, settings)
    mode, slots = plan_at_cursor(text, offset, lang, settings)
    if mode == "none":
        return FillOutcome((), "none", note="nothing to complete here (cursor inside a word)")
    return run_fill(filler, text, [(offset, offset)], lang, mode, slots, settings, **kw)


def fill_selections(
    filler: Filler, text: str, spans: list[tuple[int, int]], lang: str | None, settings: ServerSettings, **kw
) -> FillOutcome:
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
        raise BadRequest(
            "fillBody needs a grammar to find the function; this language is not supported (python, javascript, typescript, tsx, go, rust, lua are)"
        )
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
