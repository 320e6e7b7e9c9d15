"""Retake the README's VS Code screenshots with the bundled model (run by hand, never by pytest):

    make editors-setup-vscode                               # once: code-server, Chromium, Playwright, .vsix
    .venv/bin/python -m tests.editors.vscode.screenshots    # from the repository root: under a minute
                                                            # (minutes more while the decoder first compiles)

It writes tests/editors/artifacts/vscode-ghost-text.png and vscode-live-canvas.png (or into --out DIR).
code-server runs the .vsix of editors/vscode/ (rebuild it with make editors-setup-vscode after changing
the extension) in a fresh profile, against this checkout's `canvas-ls serve` with no modelPath, so the
model is the bundled one (model/bundled/) with the server's default settings, as a user gets it (only
warmUp and threads are pinned, so that every run takes the same path and draws the same steps):

1. vscode-ghost-text.png: a fresh files.py with the cursor after `return ` in a `with open(path) as f:`
   block; the inline suggestion (Alt+\\) shows as ghost text.
2. vscode-live-canvas.png: a fresh stack.py; *Canvas: Fill Function Body* on `Stack.pop`, whose body
   is faded out while the live canvas (`canvas.liveCanvas`, on by default) is drawn after it. The bundled
   model fills a body in about a second, so the server runs through step_delay_server.py, which holds each
   step of a command fill on screen for --step-delay seconds (the fill itself is unchanged). Every step
   is captured; the one kept is the step with the most decoded text that still has noise slots (`·`).

Neither file is saved, and each screenshot is taken in a file that nothing touched before. The run fails
(exit 1) if the model is not the bundled one, the suggestion is empty, or no step was drawn.
--frames DIR also keeps the screenshot of every step, to choose by eye.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

from .harness import (
    GHOST_JS,
    REPO,
    browser_page,
    go_to,
    missing,
    open_file,
    run_command,
    running_code_server,
    show_ghost_text,
    text,
    wait_model_loaded,
    wait_not_filling,
)

OUT = REPO / "tests" / "editors" / "artifacts"
STEP_DELAY_SERVER = Path(__file__).resolve().parent / "step_delay_server.py"

GHOST_FILE = "files.py"
GHOST_DOC = '''import json


def read_text(path):
    """Return the text of the file at path."""
    with open(path) as f:
        return 


def read_json(path):
    """Return the JSON document in the file at path."""
    return json.loads(read_text(path))
'''
GHOST_AT = (7, 16)  # 1-based: after "        return "

BODY_FILE = "stack.py"
BODY_DOC = '''class Stack:
    """A last-in, first-out stack."""

    def __init__(self):
        self.items = []

    def push(self, item):
        """Put item on top of the stack."""
        self.items.append(item)

    def pop(self):
        """Remove and return the top item."""
        if not self.items:
            raise IndexError("pop from an empty stack")

    def is_empty(self):
        """Return True if the stack is empty."""
        return not self.items
'''
BODY_AT = (13, 9)  # inside pop()

# Larger text than the end-to-end test (the README shrinks the pictures), and nothing drawn over or
# beside the code that is not canvas-ls: no minimap, breadcrumbs, light bulb or highlighted occurrences.
USER_SETTINGS = {
    "editor.fontSize": 16,
    "editor.lineHeight": 24,
    "editor.minimap.enabled": False,
    "editor.lightbulb.enabled": "off",
    "editor.occurrencesHighlight": "off",
    "editor.selectionHighlight": False,
    "breadcrumbs.enabled": False,
    "editor.cursorBlinking": "solid",  # the cursor in every picture
}

# The live canvas: every ::after decoration in the editor's text (the canvas-ls one is the only kind
# in these files), as its CSS content string.
CANVAS_JS = """() => {
  const out = [];
  for (const el of document.querySelectorAll('.monaco-editor .view-lines span')) {
    const c = getComputedStyle(el, '::after').content;
    if (c && c !== 'none' && c !== 'normal' && c !== '""') out.push(c);
  }
  return out.join(' | ');
}"""
STATUS_JS = """() => [...document.querySelectorAll('.statusbar-item')].map(e => e.textContent).filter(t => t.includes('canvas-ls')).join(' ')"""


def _score(canvas: str) -> tuple[int, int]:
    """How much a step shows: (has decoded text and noise slots both, decoded letters)."""
    letters = len(re.findall(r"[A-Za-z_]", canvas))
    return (1 if letters and "\u00b7" in canvas else 0, letters)


def _neutral_mouse(page, width: int, height: int) -> None:
    """The pointer over empty editor space, where it shows no hover."""
    page.mouse.move(width - 120, height - 140)


def take(out: Path, step_delay: float, frames_dir: Path | None, width: int, height: int) -> None:
    workspace_settings = {
        # No canvas.modelPath: the bundled model. The server is this checkout's, through the step delay.
        "canvas.serverPath": sys.executable,
        "canvas.serverArgs": [str(STEP_DELAY_SERVER), "--step-delay", str(step_delay), "serve"],
        "canvas.logLevel": "info",
        # The same path for every fill, so that each run draws the same steps: the decoder compiled before
        # the first fill (a user's first fills run eager while it compiles) and one CPU thread (auto
        # follows the machine's load). Neither changes the model or the sampler.
        "canvas.warmUp": "first",
        "canvas.threads": 1,
    }
    root = Path(tempfile.mkdtemp(prefix="canvas-ls-screenshots-"))
    files = {GHOST_FILE: GHOST_DOC, BODY_FILE: BODY_DOC}
    with running_code_server(root, files, workspace_settings, USER_SETTINGS) as (url, workspace, log_path):
        try:
            with browser_page(url, width, height) as page:
                _shoot(page, workspace, out, frames_dir, width, height)
        except Exception:
            print(log_path.read_text()[-5000:], file=sys.stderr)
            raise


def _shoot(page, workspace: Path, out: Path, frames_dir: Path | None, width: int, height: int) -> None:
    page.locator(".monaco-workbench").click(position={"x": width // 2, "y": height // 2})

    # 1. Ghost text in a fresh files.py.
    open_file(page, GHOST_FILE, "def read_text")
    status = wait_model_loaded(page, timeout_ms=600_000)  # a first compile takes minutes
    print(f"status bar: {status!r}")
    if "bundled" not in status:
        raise SystemExit(f"the status bar does not name the bundled model: {status!r}")
    go_to(page, *GHOST_AT)
    show_ghost_text(page)
    suggested, before = None, ""
    for _ in range(20):  # the same text twice in a row: drawn completely
        page.wait_for_timeout(250)
        suggested = text(page.evaluate(GHOST_JS))
        if suggested == before:
            break
        before = suggested
    if not suggested or not suggested.strip():
        raise SystemExit("the ghost text is empty")
    _neutral_mouse(page, width, height)
    page.wait_for_timeout(500)
    page.screenshot(path=str(out / "vscode-ghost-text.png"))
    print(f"ghost text: {suggested!r} -> {out / 'vscode-ghost-text.png'}")
    page.keyboard.press("Escape")
    run_command(page, "View: Close Editor")
    if (workspace / GHOST_FILE).read_text() != GHOST_DOC:
        raise SystemExit(f"{GHOST_FILE} changed on disk")

    # 2. The live canvas during Fill Function Body, in a fresh stack.py.
    open_file(page, BODY_FILE, "class Stack")
    go_to(page, *BODY_AT)
    run_command(page, "Canvas: Fill Function Body")
    _neutral_mouse(page, width, height)
    frames: list[tuple[str, str, bytes]] = []
    last, deadline = None, time.monotonic() + 180
    while time.monotonic() < deadline:
        canvas = page.evaluate(CANVAS_JS)
        if canvas and canvas != last:
            last = canvas
            page.wait_for_timeout(150)  # the status bar's step count follows the canvas
            bar, png = page.evaluate(STATUS_JS), page.screenshot()
            if page.evaluate(CANVAS_JS) == canvas:  # still the same step: a consistent picture
                frames.append((canvas, bar, png))
        if frames and "filling" not in page.evaluate(STATUS_JS):
            break
        page.wait_for_timeout(40)
    wait_not_filling(page)
    if not frames:
        raise SystemExit("no live canvas was drawn during Fill Function Body")
    best = max(range(len(frames)), key=lambda i: (_score(frames[i][0]), i))
    for i, (canvas, bar, png) in enumerate(frames):
        print(f"{'*' if i == best else ' '} frame {i + 1:2d} [{text(bar).strip()}] {canvas}")
        if frames_dir is not None:
            (frames_dir / f"live-canvas-{i + 1:02d}.png").write_bytes(png)
    (out / "vscode-live-canvas.png").write_bytes(frames[best][2])
    print(f"live canvas: frame {best + 1} of {len(frames)} -> {out / 'vscode-live-canvas.png'}")
    if frames_dir is not None:
        page.screenshot(path=str(frames_dir / "after-fill.png"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT, help=f"where the two PNGs go (default {OUT})")
    ap.add_argument("--step-delay", type=float, default=0.8, help="seconds each step stays on screen (default 0.8)")
    ap.add_argument("--frames", type=Path, help="also keep every step's screenshot here")
    ap.add_argument("--size", default="1200x680", help="browser viewport WIDTHxHEIGHT (default 1200x680)")
    args = ap.parse_args(argv)
    absent = missing()
    if absent:
        print("needs " + ", ".join(absent) + "; run make editors-setup-vscode", file=sys.stderr)
        return 1
    width, height = (int(x) for x in args.size.split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    if args.frames:
        args.frames.mkdir(parents=True, exist_ok=True)
    take(args.out, args.step_delay, args.frames, width, height)
    return 0


if __name__ == "__main__":
    sys.exit(main())
