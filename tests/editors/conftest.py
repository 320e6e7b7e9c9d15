"""Shared helpers for the editor tests: where the editors and the server are, and skip-or-fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TEST_ENV = REPO / "editors" / "nvim" / ".test-env"


def require_editors() -> bool:
    return os.environ.get("CANVAS_REQUIRE_EDITORS", "") not in ("", "0", "false", "no")


def missing(reason: str):
    """Skip (the editor is not installed here) or, with CANVAS_REQUIRE_EDITORS=1, fail."""
    if require_editors():
        pytest.fail(f"{reason} (CANVAS_REQUIRE_EDITORS=1); run make editors-setup-nvim (editors/nvim/test-setup.sh)", pytrace=False)
    pytest.skip(f"{reason}; run make editors-setup-nvim (editors/nvim/test-setup.sh) to install it")


def canvas_ls_exe() -> str:
    exe = Path(sys.executable).parent / "canvas-ls"
    if exe.exists():
        return str(exe)
    found = shutil.which("canvas-ls")
    if not found:
        missing("canvas-ls executable not found next to this Python nor on PATH")
    return found


def nvim_version(exe: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = out.splitlines()[0] if out else ""
    if not first.startswith("NVIM v"):
        return None
    parts = first[len("NVIM v"):].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def find_nvim(series: str) -> str | None:
    """A Neovim of the given series ("0.11", "0.12"): $CANVAS_NVIM_0_11 / $CANVAS_NVIM_0_12, the test
    environment that editors/nvim/test-setup.sh makes, or `nvim` on PATH if it is that series."""
    want = tuple(int(x) for x in series.split("."))
    candidates = [
        os.environ.get("CANVAS_NVIM_" + series.replace(".", "_"), ""),
        str(TEST_ENV / f"nvim-{series}" / "bin" / "nvim"),
        shutil.which("nvim") or "",
    ]
    for c in candidates:
        if c and Path(c).exists() and nvim_version(c) == want:
            return c
    return None
