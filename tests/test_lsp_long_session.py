"""A long day of editing, over raw JSON-RPC on stdio: the spec's answers in every state, and nothing
kept per message. The server runs with the scripted backend (tests/scripted_server.py), so these
measure the server, not the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from .raw_client import DOC, SCRIPTED, RawClient


def _status(client: RawClient) -> dict:
    return client.call("workspace/executeCommand", {"command": "canvas.status", "arguments": []})["result"]


def test_shutdown_during_a_command_fill_is_answered_and_exit_is_clean():
    client = RawClient({"fills": ["1"], "steps": 50, "step_seconds": 0.1})
    client.initialize()
    client.open("file:///a.py")
    fill = client.request(
        "workspace/executeCommand",
        {
            "command": "canvas.fillSelection",
            "arguments": ["file:///a.py", {"start": {"line": 1, "character": 11}, "end": {"line": 1, "character": 11}}],
        },
    )
    time.sleep(0.5)
    shutdown = client.call("shutdown")
    assert shutdown.get("result", "missing") is None and "error" not in shutdown
    assert "error" in client.answer(fill)  # the running fill was cancelled, and answered
    after = client.call("workspace/executeCommand", {"command": "canvas.status", "arguments": []})
    assert after["error"]["code"] == -32600  # requests after shutdown: InvalidRequest
    client.notify("exit")
    assert client.exit_status() == 0


def test_exit_without_shutdown_ends_with_status_1():
    client = RawClient()
    client.initialize()
    client.notify("exit")
    assert client.exit_status() == 1


def test_a_request_before_initialize_gets_server_not_initialized():
    client = RawClient()
    answer = client.call("workspace/executeCommand", {"command": "canvas.status", "arguments": []})
    assert answer["error"]["code"] == -32002
    client.initialize()
    assert "result" in client.call("workspace/executeCommand", {"command": "canvas.status", "arguments": []})
    client.notify("exit")


def test_schema_invalid_params_are_answered_with_invalid_params():
    client = RawClient()
    client.initialize()
    client.open("file:///a.py")
    answer = client.call(
        "textDocument/inlineCompletion",
        {
            "textDocument": {"uri": "file:///a.py"},
            "position": {"line": -1, "character": 0},
            "context": {"triggerKind": 1},
        },
    )
    assert answer["error"]["code"] == -32602 and "inlineCompletion" in answer["error"]["message"]
    assert "result" in client.call("workspace/executeCommand", {"command": "canvas.status", "arguments": []})
    client.notify("exit")


def test_notifications_and_progress_leave_nothing_behind_and_unknown_documents_are_ignored():
    client = RawClient({"fills": ["1"], "steps": 2})
    client.initialize()
    client.open("file:///a.py")
    for version in range(2, 1002):  # a thousand keystrokes
        client.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": "file:///a.py", "version": version},
                "contentChanges": [{"text": DOC + "#" * (version % 7)}],
            },
        )
    client.notify(
        "textDocument/didChange",
        {"textDocument": {"uri": "file:///never-opened.py", "version": 2}, "contentChanges": [{"text": "x"}]},
    )
    for _ in range(5):  # command fills create progress tokens
        client.call(
            "workspace/executeCommand",
            {
                "command": "canvas.fillSelection",
                "arguments": [
                    "file:///a.py",
                    {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 3}},
                ],
            },
        )
    status = _status(client)
    assert status["openRequests"] <= 1  # the status request itself
    assert status["progressTokens"] == 0
    assert not [m for m in client.messages if m.get("method") == "window/showMessage" and m["params"]["type"] == 1]
    client.call("shutdown")
    client.notify("exit")
    assert client.exit_status() == 0


def test_typing_past_the_end_of_the_last_line_appends():
    """Fix 8 (server/text_store.py): the server's documents apply changes themselves. A position past a
    line's end means its end (LSP); pygls's own TextDocument put it before the last line's last
    character, so "y" + "\nz = 3" became "\nz = 3y" and line 1 lost its text."""
    client = RawClient({"fills": ["1"], "steps": 1})
    client.initialize()
    client.open("file:///last.py", "x = 1\ny")
    past_the_end = {"line": 1, "character": 40}
    client.notify(
        "textDocument/didChange",
        {
            "textDocument": {"uri": "file:///last.py", "version": 2},
            "contentChanges": [{"range": {"start": past_the_end, "end": past_the_end}, "text": "\nz = 3"}],
        },
    )
    at = {"line": 1, "character": 1}  # after "y": still on line 1
    answer = client.call(
        "textDocument/inlineCompletion",
        {"textDocument": {"uri": "file:///last.py"}, "position": at, "context": {"triggerKind": 1}},
    )
    assert "error" not in answer, answer  # pygls's text: line 1 is empty, the position past its end
    client.call("shutdown")
    client.notify("exit")
    assert client.exit_status() == 0


def test_a_client_that_closes_the_pipe_before_reading_is_gone_not_an_error():
    """Neovim quits without reading the answer to `shutdown`: the server's writes then hit a closed
    pipe. That is the client leaving (fix 9), not an error: no traceback in the log, a clean exit."""
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPTED)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "CANVAS_SCRIPT": "{}"},
    )
    proc.stdout.close()  # every answer now meets a closed pipe

    def send(message: dict) -> None:
        body = json.dumps(message).encode()
        proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        proc.stdin.flush()

    send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}})
    send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
    send({"jsonrpc": "2.0", "id": 2, "method": "shutdown"})
    send({"jsonrpc": "2.0", "method": "exit"})
    proc.stdin.close()
    log = proc.stderr.read().decode()
    assert proc.wait(30) == 0  # shutdown, then exit: status 0
    assert "Traceback" not in log and "BrokenPipe" not in log, log[-2000:]
