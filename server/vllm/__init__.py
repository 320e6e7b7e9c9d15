"""The vLLM backend: `VllmFiller`, the `Filler` interface served by a vLLM (>= 0.32) DiffusionGemma server.

Imported only when the `backend` setting is "vllm" (server/model_host.py), so httpx and this package
load for those servers alone. See filler.py for what each in-process feature becomes here.
"""

from .filler import (
    NotDiffusionModel,
    VllmAuthError,
    VllmBadRequest,
    VllmDied,
    VllmError,
    VllmFiller,
    VllmServerError,
    VllmTimeout,
    VllmUnreachable,
)

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
