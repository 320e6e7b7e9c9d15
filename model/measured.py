"""What warm-up measured, kept once per model and machine in the cache directory. Plain Python.

Warm-up decides from timings: whether compiling the decoder step pays (`compile: auto`) and what a
canvas step and a left-to-right token cost (`singleLineDecoder: auto`, model/costs.py). Timings follow
the machine's load, so two servers that warmed up while the machine was loaded differently could decide
differently, and fill the same request differently. So the first server to measure a model on a machine
writes what it found to

    $CANVAS_LS_MEASURED_DIR, else $XDG_CACHE_HOME/canvas-ls/measured, else ~/.cache/canvas-ls/measured
        <key>.json    {"key": {...}, "compile": true, "costs": {...}}

and every later server (and one measuring at the same time: a file lock orders them, the first value
written wins) takes the recorded values instead of its own. The key names the model (its directory and
its files' sizes and times), how it is loaded (dtype, device, canvas and prompt lengths, thread counts),
the settings the calibration line was filled with, and the machine (CPU model, cores) and library
versions: change any of them and the record is measured anew. Deleting the directory measures again.
Without a writable directory each server keeps what it measured (and says so in the log).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
from pathlib import Path
from typing import Any

log = logging.getLogger("canvas_ls.model.measured")

# Bump when what is measured, or how it is used, changes: older records are then ignored.
RECORD_VERSION = 1
KEEP_RECORDS = 64  # records kept in the directory (the oldest go): one per model, settings and machine


def measured_dir() -> Path:
    explicit = os.environ.get("CANVAS_LS_MEASURED_DIR")
    if explicit:
        return Path(explicit)
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "canvas-ls" / "measured"


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what platform knows."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def model_files(path: Path) -> list[tuple[str, int, int]]:
    """(name, size, modification time in ns) of the files of a checkpoint directory: what makes it this one."""
    out = []
    with contextlib.suppress(OSError):
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            if entry.is_file():
                st = entry.stat()
                out.append((entry.name, st.st_size, st.st_mtime_ns))
    return out


class Measured:
    """The record of one key: read what is recorded, settle a value (the recorded one if any, else ours)."""

    def __init__(self, key: dict[str, Any], directory: Path | None = None):
        self.key = {"record": RECORD_VERSION, **key}
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True, default=str).encode()).hexdigest()[:24]
        self.dir = directory if directory is not None else measured_dir()
        self.path = self.dir / f"{digest}.json"
        self.writable = True  # False once writing failed: this server keeps its own values

    def read(self) -> dict[str, Any]:
        """The recorded values ({} when none are, or the file is not this key's)."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("key") != json.loads(json.dumps(self.key, default=str)):
            return {}
        return {k: v for k, v in data.items() if k != "key"}

    def settle(self, name: str, value: Any) -> Any:
        """The value recorded under `name`; when there is none, `value`, recorded now. Under a file lock,
        so that servers measuring at once agree on the first value written."""
        if not self.writable:
            return value
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with _locked(self.dir / ".lock"):
                data = self.read()
                if name in data:
                    return data[name]
                data[name] = value
                tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps({"key": self.key, **data}, indent=1, default=str) + "\n")
                os.replace(tmp, self.path)
                _prune(self.dir)
        except OSError as exc:
            self.writable = False
            log.info("warm-up: could not record what it measured in %s (%s): this server keeps its own", self.dir, exc)
        return value


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on `path` for the block (fcntl; where there is none, no lock)."""
    try:
        import fcntl
    except ImportError:  # Windows: the first replace wins, the read after it agrees
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _prune(directory: Path) -> None:
    """Keep the KEEP_RECORDS records used last (tests and model updates leave stale ones behind)."""
    records = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in records[KEEP_RECORDS:]:
        with contextlib.suppress(OSError):
            old.unlink()
