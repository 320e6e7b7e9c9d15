"""The vLLM backend: `VllmFiller`, the `Filler` interface served by a vLLM (>= 0.32) DiffusionGemma server.

Imported only when the `backend` setting is "vllm" (server/model_host.py), so httpx and this package
load for those servers alone. See filler.py for what each in-process feature becomes here; errors.py
holds the errors, tokenizer.py the checkpoint's tokenizer files, http.py the HTTP connection and its
event-loop thread, probe.py the first contact with the server.
"""

from .errors import (
    NotDiffusionModel,
    VllmAuthError,
    VllmBadRequest,
    VllmDied,
    VllmError,
    VllmServerError,
    VllmTimeout,
    VllmUnreachable,
)
from .filler import VllmFiller

__all__ = [
    "NotDiffusionModel",
    "VllmAuthError",
    "VllmBadRequest",
    "VllmDied",
    "VllmError",
    "VllmFiller",
    "VllmServerError",
    "VllmTimeout",
    "VllmUnreachable",
]
