"""code-server + Playwright plumbing shared by the VS Code end-to-end test (test_vscode.py) and the README
screenshot script (screenshots.py): where the pieces are, a code-server with the .vsix installed in a
fresh profile, a headless Chromium page on it, and small editor actions.

Prerequisites: editors/vscode/test-setup.sh (make editors-setup-vscode).
Overrides: CANVAS_CODE_SERVER (code-server's entry.js or executable), CANVAS_CHROMIUM, CANVAS_VSIX.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
EXT_DIR = REPO / "editors" / "vscode"

CODE_SERVER = Path(
    os.environ.get(
        "CANVAS_CODE_SERVER", EXT_DIR / ".test-env" / "node_modules" / "code-server" / "out" / "node" / "entry.js"
    )
)
CHROMIUM = Path(os.environ.get("CANVAS_CHROMIUM", "/usr/bin/chromium"))
VSIX = Path(os.environ.get("CANVAS_VSIX", EXT_DIR / "canvas-ls.vsix"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

# A quiet workbench: no welcome page, tips, telemetry, updates, recommendations or word suggestions.
BASE_USER_SETTINGS = {
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


def server_executable() -> Path:
    """canvas-ls of the environment running the tests (the checkout under test), else the repo's .venv."""
    here = Path(sys.executable).parent / "canvas-ls"
    return here if here.exists() else REPO / ".venv" / "bin" / "canvas-ls"


def missing() -> list[str]:
    """The prerequisites that are not there (empty when everything is)."""
    out = []
    if not CODE_SERVER.exists():
        out.append(f"code-server ({CODE_SERVER})")
    if not shutil.which("node"):
        out.append("node")
    if not CHROMIUM.exists():
        out.append(f"chromium ({CHROMIUM})")
    if not VSIX.exists():
        out.append(f"the extension ({VSIX})")
    if not server_executable().exists():
        out.append(f"canvas-ls ({server_executable()})")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        out.append("the playwright Python package")
    return out


def code_server_cmd() -> list[str]:
    return ["node", str(CODE_SERVER)] if CODE_SERVER.suffix == ".js" else [str(CODE_SERVER)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
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


def write_settings(path: Path, settings: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2))


@contextlib.contextmanager
def running_code_server(
    root: Path, files: dict[str, str], workspace_settings: dict, user_settings: dict | None = None
) -> Iterator[tuple[str, Path, Path]]:
    """A code-server with the .vsix installed in a fresh profile under `root` (nothing from $HOME), its
    workspace holding `files` and `workspace_settings` (.vscode/settings.json), the user settings
    BASE_USER_SETTINGS updated with `user_settings`. Yields (url, workspace, log path); stops it on exit."""
    user_data, extensions, workspace = root / "user-data", root / "extensions", root / "workspace"
    workspace.mkdir(parents=True)
    for name, text in files.items():
        (workspace / name).write_text(text)
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(root / "xdg-config"),
        "XDG_DATA_HOME": str(root / "xdg-data"),
        "XDG_CACHE_HOME": str(root / "xdg-cache"),
    }
    log_path = root / "code-server.log"

    common = ["--user-data-dir", str(user_data), "--extensions-dir", str(extensions)]
    out = subprocess.run(
        code_server_cmd() + common + ["--install-extension", str(VSIX)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if out.returncode != 0 or "successfully installed" not in out.stdout:
        raise RuntimeError(f"installing {VSIX} failed:\n{out.stdout}{out.stderr}")

    write_settings(user_data / "User" / "settings.json", {**BASE_USER_SETTINGS, **(user_settings or {})})
    write_settings(workspace / ".vscode" / "settings.json", workspace_settings)
    config = root / "config.yaml"
    config.write_text("auth: none\ncert: false\n")
    port = free_port()
    cmd = code_server_cmd() + common + [
        "--config", str(config), "--auth", "none", "--bind-addr", f"127.0.0.1:{port}",
        "--disable-telemetry", "--disable-update-check", "--disable-workspace-trust",
        "--disable-getting-started-override", "--ignore-last-opened", str(workspace),
    ]  # fmt: skip
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, 60)
        yield f"http://127.0.0.1:{port}/?folder={workspace}", workspace, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@contextlib.contextmanager
def browser_page(url: str, width: int = 1400, height: int = 900, scale: float = 1):
    """A headless Chromium page on the workbench at `url`, once the workbench is there."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=scale)
        pg = context.new_page()
        pg.set_default_timeout(60_000)
        pg.goto(url)
        pg.wait_for_selector(".monaco-workbench", timeout=120_000)
        try:
            yield pg
        finally:
            context.close()
            browser.close()


def text(s: str) -> str:
    """Editor text as typed: VS Code renders spaces as no-break spaces."""
    return s.replace("\u00a0", " ")


def open_file(page, name: str, shown: str) -> None:
    """Open `name` through quick open; waits until the editor shows `shown`."""
    page.keyboard.press("Control+P")
    page.wait_for_selector(".quick-input-widget input", state="visible")
    page.keyboard.type(name)
    page.wait_for_selector(f".quick-input-list .monaco-list-row:has-text('{name}')", state="visible")
    page.keyboard.press("Enter")
    page.wait_for_selector(f".monaco-editor .view-lines:has-text('{shown}')")


def go_to(page, line: int, col: int) -> None:
    page.keyboard.press("Control+G")
    page.wait_for_selector(".quick-input-widget input", state="visible")
    page.keyboard.type(f"{line}:{col}")
    page.keyboard.press("Enter")
    page.wait_for_timeout(300)


def run_command(page, title: str) -> None:
    """Run a command from the command palette by its title ("Canvas: Fill Function Body")."""
    page.keyboard.press("F1")
    page.wait_for_selector(".quick-input-widget input", state="visible")
    page.keyboard.type(title)
    short = title.split(": ", 1)[-1]
    page.wait_for_selector(f".quick-input-list .monaco-list-row:has-text('{short}')", state="visible")
    page.keyboard.press("Enter")


def status_item(page):
    return page.locator(".statusbar-item", has_text="canvas-ls")


def wait_model_loaded(page, timeout_ms: int = 120_000) -> str:
    """Waits until the status bar item shows the model and device; returns its text."""
    status = status_item(page)
    status.first.wait_for(state="visible", timeout=60_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.statusbar-item')].some(e => /canvas-ls: .+ · cpu/.test(e.textContent))",
        timeout=timeout_ms,
    )
    return text(status.first.inner_text())


def wait_not_filling(page, timeout_ms: int = 120_000) -> None:
    page.wait_for_function(
        "() => ![...document.querySelectorAll('.statusbar-item')].some(e => /filling/.test(e.textContent))",
        timeout=timeout_ms,
    )


def show_ghost_text(page, timeout: float = 90):
    """Asks for an inline suggestion (Alt+\\) until ghost text shows; the client may register after the
    editor opens, so the first request can go unanswered. Returns the ghost text's locator."""
    ghost = page.locator(".monaco-editor .ghost-text-decoration")
    deadline = time.monotonic() + timeout
    while True:
        page.keyboard.press("Alt+Backslash")
        try:
            ghost.first.wait_for(state="visible", timeout=5_000)
            return ghost
        except Exception:
            if time.monotonic() > deadline:
                raise


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
