"""The vLLM backend's errors, and what its messages may show: URLs without credentials, never the API key.

Errors never produce an edit: `VllmUnreachable`, `VllmDied` (the connection broke mid-fill),
`VllmTimeout`, `VllmAuthError` (401/403) and `VllmServerError` are `BackendDied`s with a message for the
user; a 400 is a `BadFill` carrying vLLM's own message (`VllmBadRequest`); a server that is not a
diffusion model is a `ModelLoadError` that says so (`NotDiffusionModel`). The API key is only ever put in
the Authorization header: it is held in a `Secret`, never in messages, logs, `info()` or `repr()`.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from canvas_ls.model.interface import BackendDied, BadFill, ModelLoadError

if TYPE_CHECKING:
    import httpx


class VllmError(BackendDied):
    """vLLM could not serve this fill. Nothing was applied; the next fill tries again."""


class VllmUnreachable(VllmError):
    """Nothing answers at the URL (connection refused, unknown host, connect timeout)."""


class VllmDied(VllmError):
    """The connection broke while vLLM was working on the fill (the server stopped or crashed)."""


class VllmTimeout(VllmError):
    """vLLM did not answer within the timeout (setting vllmTimeout)."""


class VllmAuthError(VllmError):
    """vLLM refused the API key (401/403)."""


class VllmServerError(VllmError):
    """vLLM answered with an error of its own (5xx, an unexpected status or body)."""


class VllmBadRequest(BadFill):
    """vLLM rejected the request (400); `message` is vLLM's own."""

    def __init__(self, message: str, text: str):
        super().__init__(text)
        self.message = message


class NotDiffusionModel(ModelLoadError):
    """The server answers, but does not serve a diffusion model with vLLM's diffusion arguments."""


def display_url(url: str) -> str:
    """The URL without any user:password part, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def base_url(url: str) -> str:
    """The server root: "http://h:8000/v1/" and "http://h:8000" both give "http://h:8000"."""
    url = url.strip().rstrip("/")
    if not re.match(r"^https?://", url):
        raise ModelLoadError(f"vllmUrl must start with http:// or https://, got {display_url(url)!r}")
    return url.removesuffix("/v1")


class Secret:
    """The API key: readable as `.value`, never shown by repr(), str() or vars() of its holder."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<hidden>"

    __str__ = __repr__


def reason(exc: Exception) -> str:
    """An exception's text for a message, or its type's name where it has none."""
    text = str(exc).strip()
    return text or type(exc).__name__


def error_message(r: httpx.Response) -> str:
    """vLLM's own message from an error answer ({"error": {"message": ...}} or {"message": ...})."""
    try:
        body = r.json()
    except ValueError:
        return (r.text or r.reason_phrase or "").strip()[:500]
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if body.get("message"):
            return str(body["message"])
        if body.get("detail"):
            return str(body["detail"])
    return json.dumps(body)[:500]
