"""The language server: thin handlers that find the document, call the pipeline, convert the answer.

Features: textDocument/inlineCompletion (fill at the cursor), workspace/executeCommand with
canvas.fillSelection / canvas.fillBody / canvas.status, textDocument/codeAction offering the two
fills, $/progress while a fill runs, canvas/step notifications (live canvas, opt-in), settings from
initializationOptions and workspace/didChangeConfiguration.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from lsprotocol import types as t
from pygls.exceptions import JsonRpcException, JsonRpcInternalError, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer

from canvas_ls.model.loading import ModelLoadError
from canvas_ls.model.sampler import FillCancelled

from . import __version__, pipeline
from .engine_client import EngineDied
from .jobs import FillJobs
from .model_host import ModelHost
from .pipeline import BadRequest, FillOutcome
from .positions import line_starts, to_offset, to_position
from .settings import ServerSettings, parse_settings
from .syntax import function_body, language_for

log = logging.getLogger("canvas_ls.lsp")

APPLY_EDIT_TIMEOUT = 30.0  # seconds a client may take to answer workspace/applyEdit


class QuietAnsweredErrors(logging.Filter):
    """pygls logs every error a handler raises with its full (chained) traceback, even the ones we
    raise on purpose and answer with a clear message (bad params, superseded fills, model not
    loaded): one 40-line traceback per inline request in an editor's log. Those keep their one-line
    log from our side; the traceback only shows at debug level. Unexpected exceptions keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, JsonRpcException) and not log.isEnabledFor(logging.DEBUG):
            return False
        return True


logging.getLogger("pygls.protocol.json_rpc").addFilter(QuietAnsweredErrors())

FILL_SELECTION = "canvas.fillSelection"
FILL_BODY = "canvas.fillBody"
STATUS = "canvas.status"
STEP_NOTIFICATION = "canvas/step"


class CanvasServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("canvas-ls", __version__)
        self.settings = ServerSettings()
        self.host = ModelHost()
        self.jobs = FillJobs()
        self.client_progress = False
        self.cli_log_level: str | None = None  # `serve --log-level`, which wins over the logLevel setting

    # ---- user-facing messages ----
    def show_error(self, message: str, *, logged: bool = False) -> None:
        if not logged:
            log.error(message)
        self.window_show_message(t.ShowMessageParams(type=t.MessageType.Error, message=f"canvas-ls: {message}"))

    def show_warning(self, message: str) -> None:
        log.warning(message)
        self.window_show_message(t.ShowMessageParams(type=t.MessageType.Warning, message=f"canvas-ls: {message}"))

    def apply_settings(self, raw: Any) -> None:
        settings, problems = parse_settings(raw, self.settings)
        self.settings = settings
        if problems:
            self.show_warning("invalid settings, their defaults are used: " + "; ".join(problems))
        logging.getLogger("canvas_ls").setLevel((self.cli_log_level or settings.logLevel).upper())
        self._log_to_file(settings.logFile)

    def _log_to_file(self, path: str) -> None:
        """The logFile setting: one extra handler, replaced when the path changes."""
        root = logging.getLogger()
        current = getattr(self, "_file_handler", None)
        if current is not None and current.baseFilename == os.path.abspath(os.path.expanduser(path or "")):
            return
        if current is not None:
            root.removeHandler(current)
            current.close()
            self._file_handler = None
        if path:
            try:
                handler = logging.FileHandler(os.path.expanduser(path))
            except OSError as exc:
                self.show_warning(f"cannot write the log file {path}: {exc}")
                return
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            root.addHandler(handler)
            self._file_handler = handler

    # ---- documents ----
    def document(self, uri: str):
        if uri not in self.workspace.text_documents:
            raise BadRequest(f"unknown document {uri}: open it first (textDocument/didOpen)")
        return self.workspace.get_text_document(uri)

    @property
    def encoding(self) -> str:
        enc = getattr(self.workspace, "position_encoding", None) or "utf-16"
        return str(getattr(enc, "value", enc))

    def language(self, doc) -> str | None:
        return language_for(doc.language_id, doc.path)

    async def fill(self, uri: str, work, progress_token=None, kind: str = "inline") -> tuple[FillOutcome, int, str]:
        """Run work(infiller, on_step, cancelled) for a document; returns (outcome, version, text)."""
        doc = self.document(uri)
        version, text = doc.version, doc.source
        request_id = self.jobs.next_id()
        settings = self.settings
        loop = asyncio.get_running_loop()
        progress = Progress(self, progress_token) if progress_token is not None else None
        live = settings.liveCanvas

        def run(cancelled):
            infiller = self.host.get(settings)
            if hasattr(infiller, "on_event"):  # shared engine: say so when it died and was restarted
                infiller.on_event = lambda message: loop.call_soon_threadsafe(self.show_warning, message)

            def on_step(event):
                if progress is not None:
                    loop.call_soon_threadsafe(progress.report, pipeline.step_label(event), event.committed, event.slots)
                if live and event.render is not None:
                    texts = event.render(0)
                    loop.call_soon_threadsafe(self.send_step, uri, version, text, event.step, event.max_steps, texts, event.holes)

            return work(infiller, text, on_step if (progress or live) else None, cancelled)

        log.info("[%d] fill %s v%s", request_id, uri, version)
        if progress is not None:
            progress.begin()
        try:
            # Inline requests replace inline requests and commands replace commands: a background
            # completion must never kill a fill the user asked for explicitly.
            outcome = await self.jobs.run(f"{uri}#{kind}", run)
        except FillCancelled:
            # A client's $/cancelRequest ends this coroutine with CancelledError (pygls answers it);
            # landing here means a newer request replaced this one: ServerCancelled, which clients
            # such as Neovim report (they drop RequestCancelled answers silently).
            log.info("[%d] superseded by a newer request", request_id)
            raise JsonRpcException(message="fill superseded by a newer request", code=-32802)
        except ModelLoadError as exc:  # ModelHost logged it once; the user saw it at load time
            raise JsonRpcInternalError(message=f"model not loaded: {exc}")
        except EngineDied as exc:  # the fill was lost, nothing applied; the next fill restarts the engine
            log.warning("[%d] %s", request_id, exc)
            raise JsonRpcInternalError(message=str(exc))
        finally:
            if progress is not None:
                progress.end()
            if live:  # tell the client to clear its live canvas, whatever the outcome
                self.protocol.notify(STEP_NOTIFICATION, {"uri": uri, "version": version, "done": True})
        r = outcome.result
        if r is not None:
            log.info("[%d] %s: %d edit(s), %d passes, %.1f tokens/pass, %.3fs %s", request_id, outcome.mode, len(outcome.edits), r.forward_passes, r.tokens_per_pass, r.seconds, outcome.note)
        return outcome, version, text

    def send_step(self, uri, version, text, step, max_steps, texts, holes) -> None:
        """canvas/step: {uri, version, step, maxSteps, done: false, spans: [{range, text}]}; the range is
        the hole in the document version the fill started from, text its canvas with open slots as "·"."""
        enc, starts = self.encoding, line_starts(text)
        spans = [
            {"range": _range(text, a, b, enc, starts), "text": s}
            for (a, b), s in zip(holes, texts)
        ]
        self.protocol.notify(STEP_NOTIFICATION, {"uri": uri, "version": version, "step": step, "maxSteps": max_steps, "done": False, "spans": spans})


class Progress:
    """$/progress for one fill, if the client gave or accepts a token."""

    def __init__(self, ls: CanvasServer, token) -> None:
        self.ls, self.token = ls, token

    def begin(self, title: str = "canvas-ls: filling") -> None:
        self.ls.work_done_progress.begin(self.token, t.WorkDoneProgressBegin(title=title, percentage=0, cancellable=False))

    def report(self, label: str, committed: int, slots: int) -> None:
        pct = int(100 * committed / slots) if slots else 100
        self.ls.work_done_progress.report(self.token, t.WorkDoneProgressReport(message=label, percentage=pct))

    def end(self, message: str = "done") -> None:
        self.ls.work_done_progress.end(self.token, t.WorkDoneProgressEnd(message=message))


server = CanvasServer()


def _range(text: str, start: int, end: int, enc: str, starts: list[int]) -> t.Range:
    a, b = to_position(text, start, enc, starts), to_position(text, end, enc, starts)
    return t.Range(start=t.Position(line=a[0], character=a[1]), end=t.Position(line=b[0], character=b[1]))


def _bad(exc: Exception):
    return JsonRpcInvalidParams(message=str(exc))


@server.feature(t.INITIALIZE)
def on_initialize(ls: CanvasServer, params: t.InitializeParams) -> None:
    caps = params.capabilities
    ls.client_progress = bool(caps and caps.window and caps.window.work_done_progress)
    ls.apply_settings(params.initialization_options)


async def load_model_in_background(ls: CanvasServer) -> None:
    """Load the model on the model thread right away (so the first completion does not pay for it),
    with $/progress "loading model" for clients that show progress. A failure is shown once."""
    settings = ls.settings
    progress = Progress(ls, _progress_token(ls)) if ls.client_progress else None
    if progress is not None:
        progress.begin("canvas-ls: loading model")
    try:
        await ls.jobs.submit(lambda: ls.host.get(settings))
    except Exception as exc:  # ModelLoadError, and never let a warm-up failure take the server down
        ls.show_error(f"model not loaded: {exc}", logged=isinstance(exc, ModelLoadError))
    finally:
        if progress is not None:
            progress.end("model loaded" if ls.host.error is None else "model not loaded")


@server.feature(t.INITIALIZED)
async def on_initialized(ls: CanvasServer, params: t.InitializedParams) -> None:
    await load_model_in_background(ls)


@server.feature(t.WORKSPACE_DID_CHANGE_CONFIGURATION)
async def on_configuration(ls: CanvasServer, params: t.DidChangeConfigurationParams) -> None:
    before = ls.settings.model_key()
    ls.apply_settings(params.settings)
    if ls.settings.model_key() != before:
        await load_model_in_background(ls)


@server.feature(t.TEXT_DOCUMENT_DID_CLOSE)
def on_close(ls: CanvasServer, params: t.DidCloseTextDocumentParams) -> None:
    if ls.host.current is not None:
        ls.host.current.prefix.forget(params.text_document.uri)


# Non-empty options: an empty {} reads as "off" to clients that treat the field as a boolean.
@server.feature(t.TEXT_DOCUMENT_INLINE_COMPLETION, t.InlineCompletionOptions(work_done_progress=True))
async def on_inline_completion(ls: CanvasServer, params: t.InlineCompletionParams) -> list[t.InlineCompletionItem]:
    uri = params.text_document.uri
    try:
        doc = ls.document(uri)
        text, enc = doc.source, ls.encoding
        starts = line_starts(text)
        offset = to_offset(text, params.position.line, params.position.character, enc, starts)
        lang, settings = ls.language(doc), ls.settings

        def work(infiller, text, on_step, cancelled):
            return pipeline.complete_at(infiller, text, offset, lang, settings, cache_key=uri, on_step=on_step, cancelled=cancelled)

        outcome, version, text = await ls.fill(uri, work, params.work_done_token)
    except BadRequest as exc:
        raise _bad(exc)
    if ls.workspace.get_text_document(uri).version != version:
        log.info("document changed while filling: stale completion dropped")
        return []
    # Same version, so `text` is the snapshot `starts` was computed from.
    return [
        t.InlineCompletionItem(insert_text=e.text, range=_range(text, e.start, e.end, ls.encoding, starts))
        for e in outcome.edits
    ]


async def _apply(ls: CanvasServer, uri: str, outcome: FillOutcome, version: int, text: str) -> dict:
    if not outcome.edits:
        return {"applied": False, "reason": outcome.note or "no fill"}
    if ls.workspace.get_text_document(uri).version != version:
        return {"applied": False, "reason": "the document changed while filling; nothing was applied"}
    starts = line_starts(text)
    edits = [t.TextEdit(range=_range(text, e.start, e.end, ls.encoding, starts), new_text=e.text) for e in outcome.edits]
    change = t.TextDocumentEdit(text_document=t.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version), edits=edits)
    params = t.ApplyWorkspaceEditParams(edit=t.WorkspaceEdit(document_changes=[change]), label="canvas-ls fill")
    applied, reason = await _apply_edit(ls, params)
    r = outcome.result
    return {
        "applied": applied,
        "reason": reason,
        "edits": len(edits),
        "steps": r.forward_passes if r else 0,
        "tokensPerPass": round(r.tokens_per_pass, 2) if r else 0,
        "seconds": round(r.seconds, 3) if r else 0,
    }


async def _apply_edit(ls: CanvasServer, params: t.ApplyWorkspaceEditParams) -> tuple[bool, str]:
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


def _parse_range(text: str, raw: Any, enc: str, starts: list[int]) -> tuple[int, int]:
    try:
        s, e = raw["start"], raw["end"]
        a = to_offset(text, int(s["line"]), int(s["character"]), enc, starts)
        b = to_offset(text, int(e["line"]), int(e["character"]), enc, starts)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRequest(f"expected an LSP range {{start: {{line, character}}, end: {{...}}}}, got {raw!r}") from exc
    return (a, b) if a <= b else (b, a)


def _progress_token(ls: CanvasServer):
    if not ls.client_progress:
        return None
    token = f"canvas-ls/{ls.jobs.next_id()}"
    ls.work_done_progress.create(token)
    return token


async def _command(ls: CanvasServer, uri: str, fill) -> dict:
    """Run fill(infiller, text, ...) for a command and apply its edits (versioned) through applyEdit."""
    outcome, version, text = await ls.fill(uri, fill, _progress_token(ls), kind="command")
    return await _apply(ls, uri, outcome, version, text)


@server.command(FILL_SELECTION)
async def cmd_fill_selection(ls: CanvasServer, *args: Any) -> dict:
    """Arguments: [uri, range or [ranges]]. Every range becomes a hole; all are filled on one canvas."""
    try:
        if len(args) != 2 or not isinstance(args[0], str):
            raise BadRequest("canvas.fillSelection takes [uri, range | ranges]")
        uri = args[0]
        doc = ls.document(uri)
        text, starts = doc.source, line_starts(doc.source)
        raw = args[1] if isinstance(args[1], list) else [args[1]]
        spans = [_parse_range(text, r, ls.encoding, starts) for r in raw]
        lang, settings = ls.language(doc), ls.settings
        return await _command(ls, uri, lambda inf, text, on_step, cancelled: pipeline.fill_selections(
            inf, text, spans, lang, settings, cache_key=uri, on_step=on_step, cancelled=cancelled))
    except BadRequest as exc:
        raise _bad(exc)


@server.command(FILL_BODY)
async def cmd_fill_body(ls: CanvasServer, *args: Any) -> dict:
    """Arguments: [uri, position]. Regenerates the body of the function around the position."""
    try:
        if len(args) != 2 or not isinstance(args[0], str) or not isinstance(args[1], dict):
            raise BadRequest("canvas.fillBody takes [uri, position]")
        uri = args[0]
        doc = ls.document(uri)
        try:
            offset = to_offset(doc.source, int(args[1]["line"]), int(args[1]["character"]), ls.encoding)
        except (KeyError, TypeError, ValueError) as exc:
            raise BadRequest(f"expected an LSP position {{line, character}}, got {args[1]!r}") from exc
        lang, settings = ls.language(doc), ls.settings
        return await _command(ls, uri, lambda inf, text, on_step, cancelled: pipeline.fill_body(
            inf, text, offset, lang, settings, cache_key=uri, on_step=on_step, cancelled=cancelled))
    except BadRequest as exc:
        raise _bad(exc)


@server.command(STATUS)
def cmd_status(ls: CanvasServer, *args: Any) -> dict:
    """Model, device and whether a fill is running (for status bars)."""
    current = ls.host.current
    return {
        "version": __version__,
        "model": current.loaded.path.name if current else None,
        "device": str(current.loaded.device) if current else None,
        "dtype": str(current.loaded.dtype).removeprefix("torch.") if current else None,
        "randomWeights": current.loaded.random_weights if current else None,
        "busy": ls.jobs.running > 0,
        "error": ls.host.error,
    }


@server.feature(t.TEXT_DOCUMENT_CODE_ACTION, t.CodeActionOptions(code_action_kinds=[t.CodeActionKind.RefactorRewrite]))
def on_code_action(ls: CanvasServer, params: t.CodeActionParams) -> list[t.CodeAction]:
    uri = params.text_document.uri
    try:
        doc = ls.document(uri)
        text, enc = doc.source, ls.encoding
        starts = line_starts(text)
        r = params.range
        a = to_offset(text, r.start.line, r.start.character, enc, starts)
        b = to_offset(text, r.end.line, r.end.character, enc, starts)
    except BadRequest:
        return []
    actions = []
    if b > a:
        actions.append(t.CodeAction(title="Fill selection with canvas-ls", kind=t.CodeActionKind.RefactorRewrite, command=t.Command(title="Fill selection", command=FILL_SELECTION, arguments=[uri, [params.range]])))
    lang = ls.language(doc)
    if lang is not None and function_body(text, lang, a) is not None:
        actions.append(t.CodeAction(title="Fill function body with canvas-ls", kind=t.CodeActionKind.RefactorRewrite, command=t.Command(title="Fill function body", command=FILL_BODY, arguments=[uri, params.range.start])))
    return actions
