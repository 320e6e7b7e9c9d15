"""End to end: the canvas-ls VS Code extension (.vsix) in code-server, driven by Playwright + Chromium.

Installs the .vsix into a fresh code-server profile, opens a Python file with a hole against the real
`canvas-ls serve` of this checkout and a tiny random-weight checkpoint, and checks: ghost text appears
and Tab inserts it; *Canvas: Fill Function Body* from the command palette edits the function body
(drawing the live canvas while it runs); *Canvas: Repair Selection* changes the text only inside the
selection, or nothing ("nothing to repair"); the status bar item shows the model and device.
Screenshots go to build/editor-artifacts/ (git-ignored; or $CANVAS_ARTIFACTS). The README shows the ones
in tests/editors/artifacts/: refresh them with CANVAS_ARTIFACTS=tests/editors/artifacts.

Prerequisites: editors/vscode/test-setup.sh (apt packages, code-server, playwright, the .vsix). Without
them the test is skipped, unless CANVAS_REQUIRE_EDITORS=1, which turns a missing piece into a failure.
Overrides: CANVAS_CODE_SERVER (code-server's entry.js or executable), CANVAS_CHROMIUM, CANVAS_VSIX.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
EXT_DIR = REPO / "editors" / "vscode"
# Not the README's copies: a test run must not rewrite tracked files.
ARTIFACTS = Path(os.environ.get("CANVAS_ARTIFACTS", REPO / "build" / "editor-artifacts"))
REQUIRE = os.environ.get("CANVAS_REQUIRE_EDITORS", "") not in ("", "0", "false", "no")

CODE_SERVER = Path(os.environ.get("CANVAS_CODE_SERVER", EXT_DIR / ".test-env" / "node_modules" / "code-server" / "out" / "node" / "entry.js"))
CHROMIUM = Path(os.environ.get("CANVAS_CHROMIUM", "/usr/bin/chromium"))
VSIX = Path(os.environ.get("CANVAS_VSIX", EXT_DIR / "canvas-ls.vsix"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"]

DOC = """def add(a, b):
    return a + b


def mean(values):
    total = 0
    for v in values:
        total = total + v
    return total / len(values)


result = add(1, 2)
x = 
"""
HOLE_LINE = 13  # 1-based: "x = " (cursor after it)


def _server_executable() -> Path:
    """canvas-ls of the environment running the tests (the checkout under test), else the repo's .venv."""
    here = Path(sys.executable).parent / "canvas-ls"
    return here if here.exists() else REPO / ".venv" / "bin" / "canvas-ls"


def _missing() -> list[str]:
    missing = []
    if not CODE_SERVER.exists():
        missing.append(f"code-server ({CODE_SERVER})")
    if not shutil.which("node"):
        missing.append("node")
    if not CHROMIUM.exists():
        missing.append(f"chromium ({CHROMIUM})")
    if not VSIX.exists():
        missing.append(f"the extension ({VSIX})")
    if not _server_executable().exists():
        missing.append(f"canvas-ls ({_server_executable()})")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package")
    return missing


@pytest.fixture(scope="module")
def prerequisites():
    missing = _missing()
    if missing:
        why = "VS Code end-to-end test needs " + ", ".join(missing) + "; run make editors-setup-vscode (editors/vscode/test-setup.sh)"
        if REQUIRE:
            pytest.fail(why + " (CANVAS_REQUIRE_EDITORS=1)")
        pytest.skip(why)


def _code_server_cmd() -> list[str]:
    return ["node", str(CODE_SERVER)] if CODE_SERVER.suffix == ".js" else [str(CODE_SERVER)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"code-server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"code-server did not answer {url} in {timeout:.0f}s")


def _write_settings(path: Path, settings: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2))


@pytest.fixture(scope="module")
def code_server(prerequisites, tiny_dir, tmp_path_factory):
    """A code-server with the .vsix installed, a workspace with example.py; yields (url, workspace, log)."""
    root = tmp_path_factory.mktemp("vscode-e2e")
    user_data, extensions, workspace = root / "user-data", root / "extensions", root / "workspace"
    workspace.mkdir()
    (workspace / "example.py").write_text(DOC)
    env = {**os.environ, "XDG_CONFIG_HOME": str(root / "xdg-config"), "XDG_DATA_HOME": str(root / "xdg-data"), "XDG_CACHE_HOME": str(root / "xdg-cache")}
    log_path = root / "code-server.log"

    common = ["--user-data-dir", str(user_data), "--extensions-dir", str(extensions)]
    out = subprocess.run(_code_server_cmd() + common + ["--install-extension", str(VSIX)], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0 and "successfully installed" in out.stdout, out.stdout + out.stderr

    base_settings = {
        "workbench.startupEditor": "none",
        "workbench.tips.enabled": False,
        "workbench.enableExperiments": False,
        "workbench.welcomePage.walkthroughs.openOnInstall": False,
        "telemetry.telemetryLevel": "off",
        "update.mode": "none",
        "extensions.autoCheckUpdates": False,
        "extensions.autoUpdate": False,
        "extensions.ignoreRecommendations": True,
        "security.workspace.trust.enabled": False,
        "files.autoSave": "off",
        "editor.quickSuggestions": {"other": False, "comments": False, "strings": False},
        "editor.suggestOnTriggerCharacters": False,
        "editor.inlineSuggest.enabled": True,
        "chat.commandCenter.enabled": False,
    }
    _write_settings(user_data / "User" / "settings.json", base_settings)
    _write_settings(
        workspace / ".vscode" / "settings.json",
        {
            "canvas.serverPath": str(_server_executable()),
            "canvas.modelPath": str(tiny_dir),
            "canvas.maxSteps": 8,
            "canvas.seed": 0,
            # random weights: the step candidate with the fewest syntax errors is mostly the empty
            # fill, and these tests need fills to show; 0 keeps the final step's fill alone
            "canvas.stepCandidates": 0,
            "canvas.logLevel": "debug",
            "canvas.trace.server": "messages",
        },
    )
    config = root / "config.yaml"
    config.write_text("auth: none\ncert: false\n")
    port = _free_port()
    cmd = _code_server_cmd() + common + [
        "--config", str(config), "--auth", "none", "--bind-addr", f"127.0.0.1:{port}",
        "--disable-telemetry", "--disable-update-check", "--disable-workspace-trust",
        "--disable-getting-started-override", "--ignore-last-opened", str(workspace),
    ]  # fmt: skip
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", proc, 60)
        yield f"http://127.0.0.1:{port}/?folder={workspace}", workspace, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.fixture(scope="module")
def page(code_server):
    from playwright.sync_api import sync_playwright

    url, _, _ = code_server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        pg = context.new_page()
        pg.set_default_timeout(60_000)
        pg.goto(url)
        pg.wait_for_selector(".monaco-workbench", timeout=120_000)
        try:
            yield pg
        finally:
            context.close()
            browser.close()


def _text(s: str) -> str:
    return s.replace("\u00a0", " ")


def _go_to(page, line: int, col: int) -> None:
    page.keyboard.press("Control+G")
    page.wait_for_selector(".quick-input-widget input", state="visible")
    page.keyboard.type(f"{line}:{col}")
    page.keyboard.press("Enter")
    page.wait_for_timeout(300)


def _save_and_read(page, path: Path, before: str | None = None, timeout: float = 10) -> str:
    """Save, then the file's text once it differs from `before` and reads the same twice in a row: a save
    truncates the file, then writes it, and a read in between saw an empty file (CI once did)."""
    page.keyboard.press("Control+S")
    deadline = time.monotonic() + timeout
    last = None
    while True:
        text = path.read_text()
        if (text == last and text != before) or time.monotonic() > deadline:
            return text
        last = text
        time.sleep(0.2)


def _status_item(page):
    return page.locator(".statusbar-item", has_text="canvas-ls")


def _shot(page, name: str) -> Path:
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


# The ghost text of the first line (VS Code splits it into several spans).
GHOST_JS = """() => [...document.querySelectorAll('.monaco-editor .view-lines .ghost-text-decoration')].map(e => e.textContent).join('')"""

LIVE_CANVAS_JS = """() => {
  for (const el of document.querySelectorAll('.monaco-editor .view-lines span')) {
    const c = getComputedStyle(el, '::after').content;
    if (c && c.includes('\u00b7')) return c;
    if (el.textContent && el.textContent.includes('\u00b7') && !el.closest('.ghost-text-decoration')) return el.textContent;
  }
  return false;
}"""


def test_vscode_extension(page, code_server):
    _, workspace, log_path = code_server
    example = workspace / "example.py"
    try:
        # Open the file through quick open.
        page.locator(".monaco-workbench").click(position={"x": 700, "y": 400})
        page.keyboard.press("Control+P")
        page.wait_for_selector(".quick-input-widget input", state="visible")
        page.keyboard.type("example.py")
        page.wait_for_selector(".quick-input-list .monaco-list-row", state="visible")
        page.keyboard.press("Enter")
        page.wait_for_selector(".monaco-editor .view-lines:has-text('def mean')")

        # The status bar item: present, and shows the model and device once it has loaded.
        status = _status_item(page)
        status.first.wait_for(state="visible", timeout=60_000)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.statusbar-item')].some(e => /canvas-ls: .+ · cpu/.test(e.textContent))",
            timeout=120_000,
        )
        status_text = _text(status.first.inner_text())

        # Ghost text at the hole; the trigger is retried (the client may register after the editor opens).
        _go_to(page, HOLE_LINE, 5)
        ghost = page.locator(".monaco-editor .ghost-text-decoration")
        deadline = time.monotonic() + 90
        while True:
            page.keyboard.press("Alt+Backslash")
            try:
                ghost.first.wait_for(state="visible", timeout=5_000)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
        page.wait_for_timeout(300)
        suggested = _text(page.evaluate(GHOST_JS))
        assert suggested.strip(), "empty ghost text"
        _shot(page, "vscode-ghost-text.png")

        page.keyboard.press("Tab")
        ghost.first.wait_for(state="hidden", timeout=10_000)
        after_tab = _save_and_read(page, example, before=DOC)
        lines = after_tab.splitlines()
        assert after_tab != DOC
        assert lines[HOLE_LINE - 1].startswith("x = ")
        inserted = after_tab[len(DOC) - 1 :] if after_tab.startswith(DOC[:-1]) else None
        assert inserted is not None, f"the edit is not at the hole:\n{after_tab}"
        assert inserted.startswith(suggested.rstrip()[: len(suggested.rstrip())]), (inserted, suggested)
        assert after_tab.splitlines()[:12] == DOC.splitlines()[:12]

        # Fill Function Body from the palette. Slow it down (one token per step, 32 steps) through a
        # settings change, so the live canvas can be seen; this also exercises didChangeConfiguration.
        settings_path = workspace / ".vscode" / "settings.json"
        settings = json.loads(settings_path.read_text())
        settings.update({"canvas.maxSteps": 32, "canvas.acceptance": "confidence", "canvas.confidenceThreshold": 1.0, "canvas.repairRounds": 0})
        settings_path.write_text(json.dumps(settings, indent=2))
        page.wait_for_timeout(1500)

        _go_to(page, 7, 9)  # inside mean(): "for v in values:"
        page.keyboard.press("F1")
        page.wait_for_selector(".quick-input-widget input", state="visible")
        page.keyboard.type("Canvas: Fill Function Body")
        page.wait_for_selector(".quick-input-list .monaco-list-row:has-text('Fill Function Body')", state="visible")
        page.keyboard.press("Enter")
        live = None
        try:
            live = page.wait_for_function(LIVE_CANVAS_JS, timeout=30_000, polling=50).json_value()
            _shot(page, "vscode-live-canvas.png")
        except Exception:
            pass
        page.wait_for_function(
            "() => ![...document.querySelectorAll('.statusbar-item')].some(e => /filling/.test(e.textContent))",
            timeout=120_000,
        )
        after_body = _save_and_read(page, example, before=after_tab, timeout=30)
        _shot(page, "vscode-fill-body.png")
        assert after_body != after_tab, "Fill Function Body changed nothing"
        body_lines = after_body.splitlines()
        assert body_lines[:4] == DOC.splitlines()[:4], "add() must not change"
        assert "def mean(values):" in after_body, "the signature is kept"
        assert after_body.rstrip().endswith(lines[-1].rstrip()), "code after the function is kept"
        assert live, "the live canvas was not drawn during Fill Function Body"

        # Repair Selection on add() (lines 1-2, untouched so far) from the palette. A higher threshold
        # than the default re-noises more of the random model's tokens, so the live canvas has slots.
        settings.update({"canvas.repairThreshold": 0.3})
        settings_path.write_text(json.dumps(settings, indent=2))
        page.wait_for_timeout(1500)
        _go_to(page, 1, 1)
        page.keyboard.press("Shift+ArrowDown")
        page.keyboard.press("Shift+ArrowDown")
        selected = after_body[: after_body.index("\n", after_body.index("\n") + 1) + 1]
        assert selected == "def add(a, b):\n    return a + b\n"
        page.keyboard.press("F1")
        page.wait_for_selector(".quick-input-widget input", state="visible")
        page.keyboard.type("Canvas: Repair Selection")
        page.wait_for_selector(".quick-input-list .monaco-list-row:has-text('Repair Selection')", state="visible")
        page.keyboard.press("Enter")
        repair_live = None
        try:
            repair_live = page.wait_for_function(LIVE_CANVAS_JS, timeout=30_000, polling=50).json_value()
            _shot(page, "vscode-repair.png")
        except Exception:
            pass
        page.wait_for_function(
            "() => ![...document.querySelectorAll('.statusbar-item')].some(e => /filling/.test(e.textContent))",
            timeout=120_000,
        )
        after_repair = _save_and_read(page, example, before=after_body, timeout=15)
        if repair_live is None:
            _shot(page, "vscode-repair.png")
        assert after_repair.endswith(after_body[len(selected) :]), "the repair changed text outside the selection"
        if after_repair == after_body:  # nothing to repair, or every change refused: the editor says so
            notes = page.locator(".notifications-toasts", has_text="canvas-ls: nothing")
            notes.first.wait_for(state="visible", timeout=10_000)
        assert repair_live, "the live canvas was not drawn during Repair Selection"
        print(f"status bar: {status_text!r}; ghost text: {suggested!r}; live canvas: {live!r}; repair: {repair_live!r}")
    except Exception:
        _shot(page, "vscode-failure.png")
        print(log_path.read_text()[-5000:])
        raise
