"""A JSON-RPC client over stdio that frames messages by hand, so it can send what a typed client never
would (invalid params, requests before initialize). Used by tests/test_lsp_long_session.py and
benchmarks/soak.py against `canvas-ls serve` with the scripted backend (tests/scripted_server.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

SCRIPTED = Path(__file__).parent / "scripted_server.py"
DOC = "def f(x):\n    return \n"


class RawClient:
    """Frames JSON-RPC by hand, so it can send what a typed client never would."""

    def __init__(self, script: dict | None = None, command: list[str] | None = None) -> None:
        env = {**os.environ, "CANVAS_SCRIPT": json.dumps(script or {})}
        self.proc = subprocess.Popen(
            command or [sys.executable, str(SCRIPTED)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.messages: list[dict] = []
        self.arrived: dict = {}  # answer id -> (perf_counter when it arrived, how many answers had that id)
        self.lock = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # drain the log
        self.next_id = 0
        self.keep_messages = True  # the soak benchmark keeps only answers

    def send_raw(self, body: bytes) -> None:
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def _read(self) -> None:
        out = self.proc.stdout
        while True:
            header = out.readline()
            if not header:
                return
            length = int(header.split(b":")[1]) if header.lower().startswith(b"content-length") else None
            while header.strip():
                header = out.readline()
            if length is None:
                continue
            message = json.loads(out.read(length))
            if "method" in message and "id" in message:  # a request to the client: answer it
                self.send(
                    {
                        "jsonrpc": "2.0",
                        "id": message["id"],
                        "result": {"applied": True} if message["method"] == "workspace/applyEdit" else None,
                    }
                )
            with self.lock:
                if "id" in message and "method" not in message:
                    when, count = self.arrived.get(message["id"], (0.0, 0))
                    self.arrived[message["id"]] = (when or time.perf_counter(), count + 1)
                if self.keep_messages or "id" in message:
                    self.messages.append(message)
                self.lock.notify_all()

    def send(self, message: dict) -> None:
        self.send_raw(json.dumps(message).encode())

    def request(self, method: str, params=None) -> int:
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        return self.next_id

    def notify(self, method: str, params=None) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def answer(self, msg_id: int, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                found = [m for m in self.messages if m.get("id") == msg_id and "method" not in m]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no answer to request {msg_id}")
                self.lock.wait(left)

    def call(self, method: str, params=None) -> dict:
        return self.answer(self.request(method, params))

    def initialize(self) -> None:
        self.call(
            "initialize", {"processId": None, "rootUri": None, "capabilities": {"window": {"workDoneProgress": True}}}
        )
        self.notify("initialized", {})

    def open(self, uri: str, text: str = DOC) -> None:
        self.notify(
            "textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text}}
        )

    def exit_status(self, timeout: float = 20) -> int:
        return self.proc.wait(timeout)
