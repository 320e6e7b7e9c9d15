"""workspace/executeCommand and textDocument/codeAction: the fill commands and the repair command,
applied through workspace/applyEdit against the document version they were computed for, and
canvas.status. The fills themselves are server/pipeline.py's and server/repair.py's; a command's result
is the fill's JSON form (server/fill_report.py) with applied, reason and edits.

Handlers take the CanvasServer (`ls`) first, as pygls handlers do; server/lsp.py registers them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from lsprotocol import types as t
from pygls.exceptions import JsonRpcInvalidParams

from canvas_ls.model.cache_budget import owned_by, shared_budget

from . import __version__, pipeline
from .fill_job import Progress
from .fill_report import fill_json
from .pipeline import BadRequest, FillOutcome
from .positions import to_offset, to_range
from .repair import check_repair_spans, repair_selections
from .syntax.parsed import documents

FILL_SELECTION = "canvas.fillSelection"
FILL_BODY = "canvas.fillBody"
REPAIR_SELECTION = "canvas.repairSelection"
STATUS = "canvas.status"
_ARGUMENTS = {FILL_SELECTION: "range | ranges", FILL_BODY: "position", REPAIR_SELECTION: "range"}
APPLY_EDIT_TIMEOUT = 30.0  # seconds a client may take to answer workspace/applyEdit


async def _apply(ls, uri: str, outcome: FillOutcome, version: int, text: str) -> dict:
    if ls.workspace.get_text_document(uri).version != version:
        return {"applied": False, "reason": "the document changed while filling; nothing was applied"}
    if not outcome.edits:
        return {"applied": False, "reason": outcome.note or "no fill"}
    starts = ls.line_starts(uri, text)
    edits = [
        t.TextEdit(range=to_range(text, e.start, e.end, ls.encoding, starts), new_text=e.text) for e in outcome.edits
    ]
    change = t.TextDocumentEdit(
        text_document=t.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version), edits=edits
    )
    params = t.ApplyWorkspaceEditParams(edit=t.WorkspaceEdit(document_changes=[change]), label="canvas-ls fill")
    applied, reason = await _apply_edit(ls, params)
    return {"applied": applied, "reason": reason, "edits": len(edits), **fill_json(outcome)}


async def _apply_edit(ls, params: t.ApplyWorkspaceEditParams) -> tuple[bool, str]:
    """(applied, reason). A client that answers null, answers with an error, or never answers within
    APPLY_EDIT_TIMEOUT gets the fill reported as not applied, instead of a command that hangs."""
    try:
        result = await asyncio.wait_for(ls.workspace_apply_edit_async(params), APPLY_EDIT_TIMEOUT)
    except asyncio.TimeoutError:
        return False, f"the editor did not answer workspace/applyEdit within {APPLY_EDIT_TIMEOUT:.0f} s"
    except Exception as exc:  # the client answered with an error (or the answer did not parse)
        return False, f"the editor refused workspace/applyEdit: {exc}"
    if result is None or not isinstance(getattr(result, "applied", None), bool):
        return False, "the editor answered workspace/applyEdit without saying whether it applied the edit"
    return result.applied, result.failure_reason or ""


def _offset_of(text: str, raw: Any, enc: str, starts: list[int], what: str) -> int:
    """An LSP position {line, character} from a command's JSON arguments. A malformed one is named as
    such; one outside the document keeps to_offset's own reason."""
    try:
        line, character = int(raw["line"]), int(raw["character"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRequest(f"expected an LSP {what} {{line, character}}, got {raw!r}") from exc
    return to_offset(text, line, character, enc, starts)


def _parseto_range(text: str, raw: Any, enc: str, starts: list[int]) -> tuple[int, int]:
    if not isinstance(raw, dict) or "start" not in raw or "end" not in raw:
        raise BadRequest(f"expected an LSP range {{start: {{line, character}}, end: {{...}}}}, got {raw!r}")
    a = _offset_of(text, raw["start"], enc, starts, "position")
    b = _offset_of(text, raw["end"], enc, starts, "position")
    return (a, b) if a <= b else (b, a)


def progress_token(ls):
    if not ls.client_progress:
        return None
    return Progress.create(ls.work_done_progress, f"canvas-ls/{ls.jobs.next_id()}")


async def _command(ls, name: str, args: tuple, plan) -> dict:
    """The one path of the three commands (fill selection, fill body, repair selection): [uri, where] -> plan(text, where, starts, lang) -> (holes,
    fill); run the fill as a FillJob, then apply its edits (versioned) through workspace/applyEdit."""
    try:
        if len(args) != 2 or not isinstance(args[0], str):
            raise BadRequest(f"{name} takes [uri, {_ARGUMENTS[name]}]")
        uri = args[0]
        doc = ls.document(uri)
        text = doc.source
        holes, fill = plan(text, args[1], ls.line_starts(uri, text), ls.language(doc), ls.settings, uri, ls.encoding)
        outcome, version, text = await ls.fill(uri, fill, holes, "command", progress_token(ls))
    except BadRequest as exc:
        raise JsonRpcInvalidParams(message=str(exc))
    return await _apply(ls, uri, outcome, version, text)


def _plan_selection(text, where, starts, lang, settings, uri, encoding):
    raw = where if isinstance(where, list) else [where]
    spans = [_parseto_range(text, r, encoding, starts) for r in raw]
    return spans, lambda filler, on_step, cancelled: pipeline.fill_selections(
        filler, text, spans, lang, settings, document=uri, on_step=on_step, cancelled=cancelled
    )


def _plan_body(text, where, starts, lang, settings, uri, encoding):
    offset = _offset_of(text, where, encoding, starts, "position")
    body = pipeline.body_at(text, lang, offset) if lang is not None else None  # for live-canvas ranges
    holes = [body] if body is not None else []
    return holes, lambda filler, on_step, cancelled: pipeline.fill_body(
        filler, text, offset, lang, settings, document=uri, on_step=on_step, cancelled=cancelled
    )


def _plan_repair(text, where, starts, lang, settings, uri, encoding):
    raw = where if isinstance(where, list) else [where]
    spans = check_repair_spans(text, [_parseto_range(text, r, encoding, starts) for r in raw], settings)
    # whether the backend can repair is its own to say (FillerInfo.repair): repair_selections asks it
    return spans, lambda filler, on_step, cancelled: repair_selections(
        filler, text, spans, lang, settings, document=uri, on_step=on_step, cancelled=cancelled
    )


async def fill_selection(ls, *args: Any) -> dict:
    """Arguments: [uri, range or [ranges]]. Every range becomes a hole; all are filled on one canvas."""
    return await _command(ls, FILL_SELECTION, args, _plan_selection)


async def fill_body(ls, *args: Any) -> dict:
    """Arguments: [uri, position]. Regenerates the body of the function around the position."""
    return await _command(ls, FILL_BODY, args, _plan_body)


async def repair_selection(ls, *args: Any) -> dict:
    """Arguments: [uri, range]. Re-noises and denoises the selected tokens the model finds unlikely or
    the syntax judge blames; "nothing to repair" (no edit) when there are none."""
    return await _command(ls, REPAIR_SELECTION, args, _plan_repair)


def status(ls, *args: Any) -> dict:
    """Model, device and whether a fill is running (for status bars)."""
    info = ls.host.current.info() if ls.host.current is not None else None
    return {
        "version": __version__,
        "model": info.model if info else None,
        "device": info.device if info else None,
        "dtype": info.dtype if info else None,
        "backend": info.backend if info else None,
        "randomWeights": info.random_weights if info else None,
        "liveCanvas": bool(info.live_canvas) if info else None,
        # the in-process decoder step (compiled or eager, and why) and what warm-up measured, which
        # single-line fills weigh to choose the canvas or left to right
        "compile": info.compile if info else None,
        "passMs": info.pass_ms if info else None,
        "tokenMs": info.token_ms if info else None,
        "warmingUp": info.warming_up if info else None,  # fills run eager, on the canvas, until it is done
        "threads": info.threads if info else None,  # CPU threads: auto (as many as other processes leave) or fixed
        "busy": ls.jobs.running > 0,
        "error": ls.host.error,
        # What the server holds on to (a long session must keep these small): requests in flight,
        # progress tokens, open documents.
        "openRequests": len(ls.protocol._request_futures),
        "progressTokens": len(ls.work_done_progress.tokens),
        "openDocuments": len(ls.workspace.text_documents),
        "syntaxTrees": documents.parsed_count(),
        # the caches of document text and what derives from it, in one budget (setting cacheBytes)
        "caches": shared_budget().snapshot(),
    }


def _owned(uri: str, fn):
    """fn, its cached parses and verdicts counted as the document's (dropped when it closes)."""

    def run(*args):
        with owned_by(uri):
            return fn(*args)

    return run


async def code_actions(ls, params: t.CodeActionParams) -> list[t.CodeAction]:
    """Asked on every cursor move: the size limit applies, and the syntax question (an incremental
    parse at most) runs off the event loop."""
    uri = params.text_document.uri
    try:
        doc = ls.document(uri)
        text = doc.source
        pipeline.check_document(text, ls.settings)
        starts = ls.line_starts(uri, text)
        r = params.range
        a = to_offset(text, r.start.line, r.start.character, ls.encoding, starts)
        b = to_offset(text, r.end.line, r.end.character, ls.encoding, starts)
    except BadRequest:
        return []
    actions = []
    if b > a:
        actions.append(
            t.CodeAction(
                title="Fill selection with canvas-ls",
                kind=t.CodeActionKind.RefactorRewrite,
                command=t.Command(title="Fill selection", command=FILL_SELECTION, arguments=[uri, [params.range]]),
            )
        )
        actions.append(
            t.CodeAction(
                title="Repair selection with canvas-ls",
                kind=t.CodeActionKind.RefactorRewrite,
                command=t.Command(title="Repair selection", command=REPAIR_SELECTION, arguments=[uri, params.range]),
            )
        )
    lang = ls.language(doc)
    if (
        lang is not None
        and await asyncio.get_running_loop().run_in_executor(None, _owned(uri, pipeline.body_at), text, lang, a)
        is not None
    ):
        actions.append(
            t.CodeAction(
                title="Fill function body with canvas-ls",
                kind=t.CodeActionKind.RefactorRewrite,
                command=t.Command(title="Fill function body", command=FILL_BODY, arguments=[uri, params.range.start]),
            )
        )
    return actions
