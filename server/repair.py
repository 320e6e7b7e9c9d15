"""Repairing selected code (canvas.repairSelection, `canvas-ls fill --repair`): from a document and the
selected ranges to the minimal edits the model's repair makes, leaving out those that add syntax errors.

LSP-free, beside server/pipeline.py (the fills), so the language server and the command line share it.
The model side is model/repair.py, reached through FillRequest.repair_threshold.
"""

from __future__ import annotations

import difflib
import re

from canvas_ls.model.interface import BadFill, Cancelled, Filler, FillRequest, FillResult, OnStep

from . import pipeline
from .pipeline import BadRequest, Edit, FillOutcome
from .settings import ServerSettings
from .syntax import error_spans
from .syntax.postprocess import FillContext, drop_stray_characters

NOTHING_TO_REPAIR = "nothing to repair"

_WORD = re.compile(r"\w+|\s+|[^\w\s]")


def minimal_edits(old: str, new: str) -> list[tuple[int, int, str]]:
    """The edits (start, end, text), offsets into `old`, that turn old into new: a diff over words,
    runs of white space and single other characters, so unchanged words are never rewritten."""
    a, b = _WORD.findall(old), _WORD.findall(new)
    a_at = [0]
    for w in a:
        a_at.append(a_at[-1] + len(w))
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op != "equal":
            out.append((a_at[i1], a_at[i2], "".join(b[j1:j2])))
    return out


def _touches_error(text: str, start: int, end: int, lang: str) -> bool:
    """Whether a syntax error of `text` (an ERROR node, a MISSING one) touches [start, end]: a change
    that lands in an error is refused even when an error that was there before "explains" it."""
    local, base = pipeline.local_window(text, start)
    return any(e.start <= end - base and e.end >= start - base for e in error_spans(local, lang))


def check_repair_spans(text: str, spans: list[tuple[int, int]], settings: ServerSettings) -> list[tuple[int, int]]:
    """The ranges to repair, sorted; BadRequest when the document or a range cannot be repaired (empty,
    overlapping, outside the document). Needs no model: callers may check before one loads."""
    pipeline.check_document(text, settings)
    spans = sorted(spans)
    if not spans or any(a == b for a, b in spans):
        raise BadRequest("select the code to repair (the selection is empty)")
    for (_, a1), (b0, _) in zip(spans, spans[1:]):
        if b0 < a1:
            raise BadRequest("the ranges to repair overlap")
    for a, b in spans:
        pipeline.check_span(text, a, b)
    return spans


def check_can_repair(filler: Filler) -> None:
    """BadRequest, naming the backend, unless the backend says it can repair (FillerInfo.repair)."""
    info = filler.info()
    if not info.repair:
        raise BadRequest(
            f"repairing a selection needs a backend that can repair: the {info.backend} backend cannot "
            "(the in-process model can: setting backend inprocess)"
        )


def repair_selections(
    filler: Filler,
    text: str,
    spans: list[tuple[int, int]],
    lang: str | None,
    settings: ServerSettings,
    *,
    document: str | None = None,
    on_step: OnStep | None = None,
    cancelled: Cancelled | None = None,
) -> FillOutcome:
    """canvas.repairSelection: the model re-noises the selected tokens it finds unlikely (below the
    repairThreshold setting) or the syntax judge blames, and denoises them with the rest held. The edits
    are the minimal changes between each selection and its repair; a change that would add a syntax
    error is left out (each is tried in order, on top of those kept)."""
    spans = check_repair_spans(text, spans, settings)
    check_can_repair(filler)
    request = FillRequest(
        text=text,
        holes=tuple(spans),
        settings=settings.sampler_settings(),
        document=document,
        language=lang,
        repair_threshold=float(settings.repairThreshold),
    )
    try:
        request.validate()
        result = filler.fill(request, on_step=on_step, cancelled=cancelled)
    except BadFill as exc:
        raise BadRequest(str(exc)) from exc
    if result.tokens == 0 and result.changed_tokens == 0:
        return FillOutcome((), "repair", result, NOTHING_TO_REPAIR)
    edits, refused = _kept_edits(text, spans, result, lang)
    if edits:
        note = f"{refused} change(s) left out: they would add syntax errors" if refused else ""
    elif refused:
        note = f"nothing repaired: every change ({refused}) would add a syntax error"
    else:
        note = f"{NOTHING_TO_REPAIR}: the model kept the {result.tokens} token(s) it re-noised"
    return FillOutcome(tuple(edits), "repair", result, note)


def _kept_edits(
    text: str, spans: list[tuple[int, int]], result: FillResult, lang: str | None
) -> tuple[list[Edit], int]:
    """(the edits kept, how many changes were left out): each minimal change of each repaired selection,
    tried in order on top of those kept; one that adds a syntax error (the judge's, or an error node
    touching it) is left out."""
    originals = [text[a:b] for a, b in spans]
    current = list(originals)
    judge = pipeline.make_judge(text, tuple(spans), lang) if lang is not None else None
    doc, delta = text, 0  # the document with the changes kept so far; how far they moved what follows
    edits, refused = [], 0
    for h, ((start, _), fill) in enumerate(zip(spans, result.fills)):
        fill = drop_stray_characters(
            fill, FillContext(prefix=text, suffix="", lang=lang, mode="multi")
        )  # the whole document's characters stay
        moved = delta  # where this hole's kept changes begin to count
        for a, b, new in minimal_edits(originals[h], fill):
            at = start + a + delta  # the change's place in `doc`
            trial = current[h][: a + delta - moved] + new + current[h][b + delta - moved :]
            after = doc[:at] + new + doc[at + b - a :]
            if lang is not None and (
                any(judge(tuple(trial if i == h else c for i, c in enumerate(current))))
                or _touches_error(after, at, at + len(new), lang)
            ):
                refused += 1
                continue
            current[h], doc = trial, after
            delta += len(new) - (b - a)
            edits.append(Edit(start + a, start + b, new))
    return edits, refused
