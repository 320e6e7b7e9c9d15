"""Runs the VS Code client's own protocol test (editors/vscode/test/protocol.test.mjs, `npm test`):
the extension's settings functions and the real `canvas-ls serve` over stdio through vscode-jsonrpc.

Needs node and editors/vscode/node_modules (editors/vscode/test-setup.sh, or `npm ci` there); skipped
without them unless CANVAS_REQUIRE_EDITORS=1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
EXT_DIR = REPO / "editors" / "vscode"


def test_vscode_protocol_node(tiny_dir):
    missing = [what for what, ok in (("node", shutil.which("node")), ("npm", shutil.which("npm")), (f"{EXT_DIR}/node_modules", (EXT_DIR / "node_modules").is_dir())) if not ok]
    if missing:
        why = "the VS Code protocol test needs " + ", ".join(missing) + "; run make editors-setup-vscode (editors/vscode/test-setup.sh)"
        if os.environ.get("CANVAS_REQUIRE_EDITORS", "") not in ("", "0", "false", "no"):
            pytest.fail(why + " (CANVAS_REQUIRE_EDITORS=1)")
        pytest.skip(why)
    server = Path(sys.executable).parent / "canvas-ls"
    env = {
        **os.environ,
        "CANVAS_LS_SERVER": str(server if server.exists() else REPO / ".venv" / "bin" / "canvas-ls"),
        "CANVAS_PYTHON": sys.executable,
        "CANVAS_TINY_MODEL": str(tiny_dir),
    }
    out = subprocess.run(["npm", "test", "--silent"], cwd=EXT_DIR, env=env, capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    assert "# fail 0" in out.stdout and "# skipped 0" in out.stdout, out.stdout[-3000:]
