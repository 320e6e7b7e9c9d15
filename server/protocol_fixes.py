"""pygls 2.1's JSON-RPC layer, fixed where a long editing session or the spec needs it. Each fix is
small, names its reason, and has a stdio test in tests/test_lsp_long_session.py that fails without it.

1. `shutdown` while a request runs answered -32603 "dictionary changed size during iteration":
   lsp_shutdown iterates `_request_futures` while each Future.cancel() callback pops from it.
2. Every notification left a finished Future in `_request_futures` (~2.3 KB each: hundreds of MB over a
   day of didChange), because notifications never pop the id they were stored under; so did every
   step of a built-in handler that hands over to ours (initialized, didClose, shutdown).
3. A message whose params do not match the schema (a position with `line: -1`) was logged as
   "Unable to deserialize message" and never answered; JSON-RPC asks for -32602 InvalidParams.
4. Requests before `initialize` got -32603 "workspace is not available"; the spec says -32002.
5. Requests after `shutdown` were dropped unanswered; the spec says InvalidRequest.
6. `exit` without `shutdown` ended the process with status 0; the spec says 1.
7. A didChange for a document never opened raised KeyError, shown to the user as "Error in server"
   twice; it is logged and ignored.
8. A keystroke in a 7.5 MB document took 110-145 ms in pygls's TextDocument (it splits and re-joins
   every line): the workspace holds server/text_store.py's Documents instead.
9. An editor that quits without reading the last answers (Neovim closes the pipe right after sending
   `shutdown`) made pygls log "Error sending data. BrokenPipeError" with three tracebacks at ERROR:
   a closed pipe now means the client is gone, said once at INFO, and later answers are dropped.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from typing import Any

from lsprotocol import types as t
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcMethodNotFound
from pygls.protocol import LanguageServerProtocol, lsp_method
from pygls.protocol.json_rpc import RPCRequest

from .text_store import CanvasWorkspace

log = logging.getLogger("canvas_ls.protocol")

SERVER_NOT_INITIALIZED = -32002
INVALID_REQUEST = -32600


class _Unanswerable:
    """What structure_message returns for a request it already answered with an error (fix 3)."""

    jsonrpc = "unanswerable"


class _ClientWriter:
    """pygls' writer, for a client that may close its end at any time (fix 9)."""

    def __init__(self, writer):
        self._writer = writer
        self.gone = False

    def write(self, data: bytes):
        if self.gone:
            return None
        try:
            return self._writer.write(data)
        except (BrokenPipeError, ConnectionResetError) as exc:
            self.gone = True
            log.info("the client closed the connection (%s): its remaining answers are dropped", type(exc).__name__)
            return None

    def close(self):
        try:
            return self._writer.close()
        except (BrokenPipeError, ConnectionResetError, ValueError):
            return None


class CanvasProtocol(LanguageServerProtocol):
    # -- fix 9: a client that closed the pipe is gone, not an error ---------------------------------
    def set_writer(self, writer, include_headers: bool = True):
        super().set_writer(_ClientWriter(writer), include_headers)

    # -- fix 3: answer schema-invalid requests ----------------------------------------------------
    def structure_message(self, data: dict[str, Any]):
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if "id" not in data or "method" not in data or "error" in data:
                raise  # a notification or a response: nobody waits for an answer
            reason = exc.__cause__ or exc
            message = f"invalid params for {data['method']}: {str(reason).splitlines()[0]}"
            self._send_response(data["id"], None, JsonRpcInvalidParams(message=message).to_response_error())
            return _Unanswerable()

    def handle_message(self, message):
        if isinstance(message, _Unanswerable):
            return
        is_request = isinstance(message, RPCRequest)
        method = getattr(message, "method", "")
        if is_request and method != t.INITIALIZE and self._workspace is None:  # fix 4
            self._send_error(
                message.id, SERVER_NOT_INITIALIZED, "the server is not initialized yet: send initialize first"
            )
            return
        if is_request and self._shutdown and method != t.EXIT:  # fix 5
            self._send_error(message.id, INVALID_REQUEST, "the server is shutting down: only exit is accepted")
            return
        super().handle_message(message)

    def _send_error(self, msg_id, code: int, message: str) -> None:
        self._send_response(msg_id, None, JsonRpcException(code=code, message=message).to_response_error())

    # -- fix 2: notifications do not leak their futures ---------------------------------------------
    def _handle_notification(self, method_name: str, params: Any):
        if method_name == t.CANCEL_REQUEST:
            self._handle_cancel_notification(params.id)
            return
        try:
            handler = self._get_handler(method_name)
        except JsonRpcMethodNotFound:
            log.debug("ignoring notification for unknown method %r", method_name)
            return
        msg_id = str(uuid.uuid4())

        def done(future) -> None:
            self._request_futures.pop(msg_id, None)
            self._check_handler_result(future)

        try:
            self._execute_handler(msg_id=msg_id, handler=handler, args=(params,), callback=done)
        except Exception as error:  # as pygls does: report, never stop reading
            log.exception("failed to handle notification %r", method_name)
            self._server._report_server_error(error, Exception)

    def _run_generator(self, future, *, gen, result_future):
        """pygls' version, with each step's future popped when it is done."""
        if result_future.cancelled():
            return
        try:
            value = future.result() if future is not None else None
            handler, args, kwargs = gen.send(value)
        except StopIteration as result:
            result_future.set_result(result.value)
            return
        except Exception as exc:
            result_future.set_exception(exc)
            return
        msg_id = str(uuid.uuid4())

        def next_part(done) -> None:
            self._request_futures.pop(msg_id, None)
            self._run_generator(done, gen=gen, result_future=result_future)

        try:
            self._execute_handler(msg_id, handler, args=args, kwargs=kwargs, callback=next_part)
        except Exception as exc:
            result_future.set_exception(exc)

    # -- fix 8: a workspace of Documents that change in time proportional to the edit ---------------
    @lsp_method(t.INITIALIZE)
    def lsp_initialize(self, params: t.InitializeParams):
        result = yield from super().lsp_initialize(params)
        self._workspace = CanvasWorkspace.like(self._workspace)  # no document is open before initialize
        return result

    # -- fix 1: shutdown cancels a copy of the running requests -----------------------------------
    @lsp_method(t.SHUTDOWN)
    def lsp_shutdown(self, *args):
        if (user_handler := self.fm.features.get(t.SHUTDOWN)) is not None:
            yield user_handler, args, None
        current_id = self.msg_id
        for msg_id, future in list(self._request_futures.items()):
            if msg_id != current_id and not future.done():
                future.cancel()
        self._shutdown = True
        return None

    # -- fix 6: exit status -------------------------------------------------------------------------
    @lsp_method(t.EXIT)
    def lsp_exit(self, *args):
        if (user_handler := self.fm.features.get(t.EXIT)) is not None:
            yield user_handler, args, None
        code = 0 if self._shutdown else 1
        log.info("exit (status %d)", code)
        logging.shutdown()
        sys.stdout.flush()
        # The model thread may be mid-step; the process ends here whatever it holds.
        os._exit(code)

    # -- fix 7: didChange for an unknown document ---------------------------------------------------
    @lsp_method(t.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: t.DidChangeTextDocumentParams):
        if params.text_document.uri not in self.workspace.text_documents:
            log.warning("didChange for %s, which was never opened: ignored", params.text_document.uri)
            return
        yield from super().lsp_text_document__did_change(params)
