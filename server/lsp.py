"""The language server: thin handlers that find the document, call the pipeline, convert the answer.

Features: textDocument/inlineCompletion (fill at the cursor), workspace/executeCommand with
canvas.fillSelection / canvas.fillBody / canvas.status, textDocument/codeAction offering the two
fills, $/progress while a fill runs, canvas/step notifications (live canvas, opt-in), settings from
initializationOptions and workspace/didChangeConfiguration.
"""

from __future__ import annotations

import logging
from typing import Any

from lsprotocol import types as t
from pygls.exceptions import JsonRpcException, JsonRpcInternalError, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer

from canvas_ls.model.cache_budget import shared_budget
from canvas_ls.model.interface import BackendDied, FillCancelled, ModelLoadError, StepEvent

from . import __version__, commands, documents, logs, pipeline
from .fill_job import FillJob, FillJobs, Progress, Work
from .model_host import ModelHost
from .pipeline import BadRequest, FillOutcome
from .positions import line_starts, to_offset, to_range
from .protocol_fixes import CanvasProtocol
from .settings import ServerSettings, parse_settings
from .syntax import language_for
from .text_store import Document

log = logging.getLogger("canvas_ls.lsp")

STEP_NOTIFICATION = "canvas/step"


class CanvasServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("canvas-ls", __version__, protocol_cls=CanvasProtocol)
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
        shared_budget().resize(settings.cacheBytes)
        logs.set_level(self.cli_log_level or settings.logLevel)
        problem = logs.set_log_file(settings.logFile)
        if problem:
            self.show_warning(problem)

    # ---- documents ----
    def document(self, uri: str):
        if uri not in self.workspace.text_documents:
            raise BadRequest(f"unknown document {uri}: open it first (textDocument/didOpen)")
        return self.workspace.get_text_document(uri)

    def line_starts(self, uri: str, text: str):
        """The line starts of `text`: the open document's own (kept up to date by server/text_store.py)
        when `text` is its current text, else counted now."""
        doc = self.workspace.text_documents.get(uri)
        if isinstance(doc, Document) and doc.source is text:
            return doc.starts
        return line_starts(text)

    @property
    def encoding(self) -> str:
        enc = getattr(self.workspace, "position_encoding", None) or "utf-16"
        return str(getattr(enc, "value", enc))

    def language(self, doc) -> str | None:
        return language_for(doc.language_id, doc.path)

    async def fill(
        self, uri: str, work: Work, holes, kind: str = "inline", progress_token=None
    ) -> tuple[FillOutcome, int, str]:
        """Run work(filler, on_step, cancelled) on the current version of a document, as a FillJob.

        `holes` are the spans being filled (for live-canvas ranges). Returns (outcome, version, text);
        turns the model side's errors into JSON-RPC errors."""
        doc = self.document(uri)
        version, text = doc.version, doc.source
        settings = self.settings
        live = None
        if settings.liveCanvas:

            def live(event: StepEvent | None, done: bool) -> None:
                self.send_step(uri, version, text, holes, event, done)

        job = FillJob(
            uri,
            version,
            text,
            kind,
            lambda: self.host.get(settings),
            Progress(self.work_done_progress, progress_token) if progress_token is not None else None,
            live,
        )
        request_id = self.jobs.next_id()
        try:
            outcome = await job.run(self.jobs, work, request_id)
        except FillCancelled:
            # A client's $/cancelRequest ends this coroutine with CancelledError (pygls answers it);
            # landing here means a newer request replaced this one: ServerCancelled, which clients
            # such as Neovim report (they drop RequestCancelled answers silently).
            log.info("[%d] superseded by a newer request", request_id)
            raise JsonRpcException(message="fill superseded by a newer request", code=t.LSPErrorCodes.ServerCancelled)
        except ModelLoadError as exc:  # ModelHost logged it once; the user saw it at load time
            raise JsonRpcInternalError(message=f"model not loaded: {exc}")
        except BackendDied as exc:  # the fill was lost, nothing applied; the next fill restarts the backend
            log.warning("[%d] %s", request_id, exc)
            raise JsonRpcInternalError(message=str(exc))
        return outcome, version, text

    def send_step(self, uri: str, version: int, text: str, holes, event: StepEvent | None, done: bool) -> None:
        """canvas/step: {uri, version, step, maxSteps, label, done, spans: [{range, text}]}; the range is
        the hole in the document version the fill started from, text its canvas with open slots as "·"."""
        if done or event is None:
            self.protocol.notify(STEP_NOTIFICATION, {"uri": uri, "version": version, "done": True})
            return
        enc, starts = self.encoding, self.line_starts(uri, text)
        spans = [{"range": to_range(text, a, b, enc, starts), "text": s} for (a, b), s in zip(holes, event.texts)]
        self.protocol.notify(
            STEP_NOTIFICATION,
            {
                "uri": uri,
                "version": version,
                "step": event.round_step,
                "maxSteps": event.round_steps,
                "label": event.label,
                "done": False,
                "spans": spans,
            },
        )


server = CanvasServer()


@server.feature(t.INITIALIZE)
def on_initialize(ls: CanvasServer, params: t.InitializeParams) -> None:
    caps = params.capabilities
    ls.client_progress = bool(caps and caps.window and caps.window.work_done_progress)
    ls.apply_settings(params.initialization_options)


async def load_model_in_background(ls: CanvasServer) -> None:
    """Load the model on the model thread right away (so the first completion does not pay for it),
    with $/progress "loading model" for clients that show progress. A failure is shown once."""
    settings = ls.settings
    progress = Progress(ls.work_done_progress, commands.progress_token(ls)) if ls.client_progress else None
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


# Non-empty options: an empty {} reads as "off" to clients that treat the field as a boolean.
@server.feature(t.TEXT_DOCUMENT_INLINE_COMPLETION, t.InlineCompletionOptions(work_done_progress=True))
async def on_inline_completion(ls: CanvasServer, params: t.InlineCompletionParams) -> list[t.InlineCompletionItem]:
    uri = params.text_document.uri
    try:
        doc = ls.document(uri)
        text = doc.source
        starts = ls.line_starts(uri, text)
        offset = to_offset(text, params.position.line, params.position.character, ls.encoding, starts)
        lang, settings = ls.language(doc), ls.settings
        outcome, version, text = await ls.fill(
            uri,
            lambda filler, on_step, cancelled: pipeline.complete_at(
                filler, text, offset, lang, settings, document=uri, on_step=on_step, cancelled=cancelled
            ),
            [(offset, offset)],
            "inline",
            params.work_done_token,
        )
    except BadRequest as exc:
        raise JsonRpcInvalidParams(message=str(exc))
    if ls.workspace.get_text_document(uri).version != version:
        log.info("document changed while filling: stale completion dropped")
        return []
    # Same version, so `text` is the snapshot `starts` was computed from.
    return [
        t.InlineCompletionItem(insert_text=e.text, range=to_range(text, e.start, e.end, ls.encoding, starts))
        for e in outcome.edits
    ]


# Document sync for the syntax trees (server/documents.py), the commands and code actions
# (server/commands.py), on the same server.
server.feature(t.TEXT_DOCUMENT_DID_OPEN)(documents.did_open)
server.feature(t.TEXT_DOCUMENT_DID_CHANGE)(documents.did_change)
server.feature(t.TEXT_DOCUMENT_DID_CLOSE)(documents.did_close)
server.command(commands.FILL_SELECTION)(commands.fill_selection)
server.command(commands.FILL_BODY)(commands.fill_body)
server.command(commands.REPAIR_SELECTION)(commands.repair_selection)
server.command(commands.STATUS)(commands.status)
server.feature(t.TEXT_DOCUMENT_CODE_ACTION, t.CodeActionOptions(code_action_kinds=[t.CodeActionKind.RefactorRewrite]))(
    commands.code_actions
)
