"""Emacs + eglot (built into Emacs 29; Debian's elpa-eglot on 28) against `canvas-ls serve`, in batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from canvas_ls.server.syntax import parse

from ..conftest import canvas_ls_exe, missing

SCRIPT = Path(__file__).with_name("canvas-eglot-test.el")

DOC = '''def mean(values):
    """Arithmetic mean."""
    total = 0
    for v in values:
        total += v
    return 


def scale(xs, k):
    out = []
    for x in xs:
        out.append(x * k)
    return out
'''


def find_emacs_with_eglot() -> str:
    emacs = os.environ.get("CANVAS_EMACS") or shutil.which("emacs")
    if not emacs or not shutil.which(emacs):
        missing(f"Emacs is not installed ({emacs or 'no emacs on PATH'})")
    probe = subprocess.run([emacs, "--batch", "-Q", "-l", str(SCRIPT)], env={**os.environ, "CANVAS_PROBE": "1"},
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if "eglot-ok" not in probe.stdout:
        missing(f"Emacs has no eglot (built in from Emacs 29; on 28: apt-get install elpa-eglot): {(probe.stdout + probe.stderr).strip()[-300:]}")
    return emacs


@pytest.fixture
def emacs():
    return find_emacs_with_eglot()


def test_eglot_inline_completion_and_fill_body(emacs, tmp_path, tiny_dir):
    src = tmp_path / "example.py"
    src.write_text(DOC)
    out = tmp_path / "report.json"
    env = {**os.environ, "CANVAS_LS": canvas_ls_exe(), "CANVAS_MODEL": str(tiny_dir), "CANVAS_FILE": str(src),
           "CANVAS_OUT": str(out), "HOME": str(tmp_path)}
    t0 = time.perf_counter()
    proc = subprocess.run([emacs, "--batch", "-Q", "-l", str(SCRIPT)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=280, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    assert out.exists(), f"no report (exit {proc.returncode}): {proc.stderr[-3000:]}"
    r = json.loads(out.read_text())
    print(f"emacs {r.get('emacs_version')}: {seconds:.1f}s, body attempts {r.get('body_attempts')}")
    assert "error" not in r, f"{r['error']}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0
    assert r["capabilities_inline"] is True
    assert r["status"]["randomWeights"] is True and r["status"]["device"] == "cpu"
    # an answer to textDocument/inlineCompletion: a list of items inserting at the cursor
    assert r["inline_type"] == "list"
    for item in r["inline_items"] or []:
        assert item["range"]["start"] == {"line": 5, "character": 11}
    # canvas.fillBody: applied through workspace/applyEdit by eglot, and the file still parses
    assert r["body_result"]["applied"] is True, r["body_result"]
    before, after = r["before_body"], r["after_body"]
    assert after != before and "def scale(xs, k):" in after
    assert after.startswith(before.split("def scale")[0])
    assert not parse(after, "python").root_node.has_error, after
