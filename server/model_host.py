"""Owns the loaded model: loads it on first use, reloads when modelPath/device/dtype change.

With no modelPath: the bundled model if this install ships one, else a tiny random-weight model built
once into the user's cache directory (its fills are noise; it lets the whole stack run anywhere).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from canvas_ls.model.infill import Infiller
from canvas_ls.model.loading import ModelLoadError, default_model_path, load_model

from .settings import ServerSettings

log = logging.getLogger("canvas_ls.model_host")


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "canvas-ls"


def demo_model_dir() -> Path:
    """The tiny random-weight model, built on first use (about 10 s, once)."""
    path = cache_dir() / "tiny-model"
    if not (path / "canvas_ls.json").exists():
        from canvas_ls.model.tiny import build_tiny_checkpoint

        log.warning("no model configured and none bundled: building a tiny random-weight model at %s", path)
        tmp = path.with_name(f"tiny-model.tmp{os.getpid()}")
        build_tiny_checkpoint(tmp)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp.rename(path)
        except OSError:  # another process won the race; use theirs
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return path


def set_threads(n: int) -> None:
    """torch's intra-op threads for the model (process-wide). Imported lazily: the CLI checks its
    arguments before paying for torch."""
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def model_dir_for(settings: ServerSettings) -> Path:
    if settings.modelPath:
        return Path(os.path.expanduser(settings.modelPath))
    return default_model_path() or demo_model_dir()


class ModelHost:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._infiller: Infiller | None = None
        self.error: str | None = None
        self._failed: tuple[tuple, ModelLoadError] | None = None  # the settings that failed, and why

    def get(self, settings: ServerSettings) -> Infiller:
        """The Infiller for these settings; raises ModelLoadError with a readable message.

        A load that failed is not retried (nor logged again) until the model settings change: every
        inline request would otherwise pay for the failure and repeat it in the log."""
        key = settings.model_key() + (settings.maxPromptTokens, settings.canvasLength, settings.engine)
        set_threads(settings.torch_threads())
        with self._lock:
            if self._infiller is not None and key == self._key:
                return self._infiller
            if self._failed is not None and self._failed[0] == key:
                raise self._failed[1]
            old, self._infiller, self._key = self._infiller, None, None
            if old is not None and hasattr(old, "close"):
                old.close()  # a RemoteInfiller: drop our connection (the engine serves others until idle)
            try:
                if settings.engine == "shared":
                    from .engine_client import connect_or_start

                    infiller = connect_or_start(settings)  # the engine loads the model with this same method
                else:
                    infiller = self._load(settings)
            except ModelLoadError as exc:
                self.error = str(exc)
                self._failed = (key, exc)
                log.error("model not loaded: %s", exc)  # once per failing setting, one line
                log.debug("model load traceback", exc_info=True)
                raise
            except Exception as exc:  # anything else a broken checkpoint makes transformers raise
                err = ModelLoadError(f"could not load the model: {type(exc).__name__}: {exc}")
                self.error = str(err)
                self._failed = (key, err)
                log.error("model not loaded: %s", err)
                log.debug("model load traceback", exc_info=True)
                raise err from exc
            self._infiller, self._key, self.error, self._failed = infiller, key, None, None
            log.info("model loaded: %s", infiller.loaded.describe())
            return infiller

    @staticmethod
    def _load(settings: ServerSettings) -> Infiller:
        loaded = load_model(model_dir_for(settings), device=settings.device, dtype=settings.dtype)
        loaded.canvas_length = min(loaded.canvas_length, settings.canvasLength)
        prompt = settings.maxPromptTokens
        if loaded.trained_prompt_tokens:  # a checkpoint trained on shorter prompts gets no longer ones
            prompt = min(prompt, int(loaded.trained_prompt_tokens))
        return Infiller(loaded, max_prompt_tokens=prompt)

    @property
    def current(self) -> Infiller | None:
        return self._infiller
