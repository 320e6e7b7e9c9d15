"""Logging for every canvas-ls process: one format, stderr (never stdout: it belongs to the protocol)
and an optional file; the level of our own loggers follows the logLevel setting."""

from __future__ import annotations

import logging
import os
import sys

from pygls.exceptions import JsonRpcException

FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
_file_handler: logging.FileHandler | None = None


def setup_logging(level: str, log_file: str | None = None) -> None:
    """stderr (and log_file) at `level` for canvas_ls; pygls only says what went wrong."""
    logging.basicConfig(level=level.upper(), handlers=[logging.StreamHandler(sys.stderr)], format=FORMAT, force=True)
    logging.getLogger("pygls").setLevel(logging.WARNING)
    logging.getLogger("pygls.protocol.json_rpc").addFilter(QuietAnsweredErrors())
    set_log_file(log_file or "")


def set_level(level: str) -> None:
    logging.getLogger("canvas_ls").setLevel(level.upper())


def set_log_file(path: str) -> str | None:
    """Also log to `path` ("" stops); one extra handler, replaced when the path changes. Returns why
    the file cannot be written, or None."""
    global _file_handler
    target = os.path.abspath(os.path.expanduser(path)) if path else ""
    if _file_handler is not None and _file_handler.baseFilename == target:
        return None
    root = logging.getLogger()
    if _file_handler is not None:
        root.removeHandler(_file_handler)
        _file_handler.close()
        _file_handler = None
    if not target:
        return None
    try:
        _file_handler = logging.FileHandler(target)
    except OSError as exc:
        return f"cannot write the log file {path}: {exc}"
    _file_handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(_file_handler)
    return None


class QuietAnsweredErrors(logging.Filter):
    """pygls logs every error a handler raises with its full (chained) traceback, even the ones we
    raise on purpose and answer with a clear message (bad params, superseded fills, model not
    loaded): one 40-line traceback per inline request in an editor's log. Those keep their one-line
    log from our side; the traceback only shows at debug level. Unexpected exceptions keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, JsonRpcException) or logging.getLogger("canvas_ls").isEnabledFor(logging.DEBUG)
