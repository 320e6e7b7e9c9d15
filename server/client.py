"""A small real LSP client over stdio (pygls' LanguageClient) that records what the server sends.

Used by the protocol tests and by benchmarks/infill_eval.py, so both speak to the server the same way.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from lsprotocol import types as t
from pygls.exceptions import JsonRpcInternalError
from pygls.lsp.client import LanguageClient


class RecordingClient(LanguageClient):
    def __init__(self) -> None:
        super().__init__("canvas-ls-tests", "1")
        self.messages: list[t.ShowMessageParams] = []
        self.progress: list = []
        self.steps: list[dict] = []
        self.applied: list[t.ApplyWorkspaceEditParams] = []
        self.apply_result: bool | None | str = True  # False: refused; None: answers null; "error": an error

        @self.feature(t.WINDOW_SHOW_MESSAGE)
        def _msg(params):
            self.messages.append(params)

        @self.feature(t.PROGRESS)
        def _progress(params):
            self.progress.append(params)

        @self.feature("canvas/step")
        def _step(params):
            self.steps.append(params)

        @self.feature(t.WORKSPACE_APPLY_EDIT)
        def _apply(params: t.ApplyWorkspaceEditParams):
            self.applied.append(params)
            if self.apply_result == "error":
                raise JsonRpcInternalError(message="the editor could not apply the edit")
            if self.apply_result is None:
                return None
            return t.ApplyWorkspaceEditResult(applied=self.apply_result)

        @self.feature(t.WINDOW_WORK_DONE_PROGRESS_CREATE)
        def _create(params):
            return None

    async def request(self, method: str, params, msg_id: str | None = None):
        return await self.protocol.send_request_async(method, params, msg_id=msg_id)


async def start(
    init_options: dict,
    progress: bool = True,
    log_level: str | None = "debug",
    env: dict | None = None,
    command: list[str] | None = None,
) -> RecordingClient:
    """Start `canvas-ls serve` (logging at `log_level`; None: the server's own default), or `command`,
    and initialize it."""
    client = RecordingClient()
    args = command or [sys.executable, "-m", "canvas_ls.server.cli", "serve"] + (
        ["--log-level", log_level] if log_level else []
    )
    await client.start_io(*args, env=env)
    caps = t.ClientCapabilities(window=t.WindowClientCapabilities(work_done_progress=progress))
    result = await client.initialize_async(t.InitializeParams(capabilities=caps, initialization_options=init_options))
    client.server_capabilities = result.capabilities
    client.initialized(t.InitializedParams())
    return client


async def stop(client: RecordingClient) -> None:
    try:
        await asyncio.wait_for(client.shutdown_async(None), 10)
        client.exit(None)
    finally:
        await client.stop()


def open_doc(
    client: RecordingClient, text: str, uri: str | None = None, language: str = "python", version: int = 1
) -> str:
    uri = uri or f"file:///tmp/{uuid.uuid4().hex}.py"
    client.text_document_did_open(
        t.DidOpenTextDocumentParams(
            text_document=t.TextDocumentItem(uri=uri, language_id=language, version=version, text=text)
        )
    )
    return uri


def inline_params(uri: str, line: int, character: int) -> t.InlineCompletionParams:
    return t.InlineCompletionParams(
        text_document=t.TextDocumentIdentifier(uri=uri),
        position=t.Position(line=line, character=character),
        context=t.InlineCompletionContext(trigger_kind=t.InlineCompletionTriggerKind.Invoked),
    )
