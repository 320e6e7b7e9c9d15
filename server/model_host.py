"""Owns the model backend: loads it on first use, reloads when the model settings change.

The language server imports only the interface (model/interface.py) until a model is actually loaded;
`load_in_process` is the one place that imports torch and transformers (the shared-engine client needs
neither). With no modelPath: the bundled model if this install ships one, else a tiny random-weight model
built once into the user's cache directory (its fills are noise; it lets the whole stack run anywhere).

After loading, a long-running host (the language server's and the shared engine's model thread) warms
the model up on a thread of its own: the decoder step is compiled when that pays (setting `compile`) and
a pass and a left-to-right token are timed, so single-line fills can take the faster path
(`singleLineDecoder`). The first fills do not wait for it: they run the eager step, on the canvas,
until the compiled step and the measured costs are in place (setting `warmUp: first` makes them wait).
A one-shot caller on the main thread (`canvas-ls fill`) skips it: for one fill, compiling costs more
than it saves.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path

from canvas_ls.model import default_model_path
from canvas_ls.model.interface import Filler, ModelLoadError

from .settings import ServerSettings
from .syntax.window import make_judge

log = logging.getLogger("canvas_ls.model_host")


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "canvas-ls"


def demo_model_dir() -> Path:
    """Where the tiny random-weight demo model lives (load_in_process builds it on first use)."""
    return cache_dir() / "tiny-model"


def model_dir_for(settings: ServerSettings) -> Path:
    if settings.modelPath:
        return Path(os.path.expanduser(settings.modelPath))
    return default_model_path() or demo_model_dir()


def _current_demo(path: Path) -> bool:
    """A demo model built by this version (older builds lack the random_weights field: rebuild them)."""
    card = path / "canvas_ls.json"
    return card.exists() and '"random_weights"' in card.read_text()


def load_in_process(settings: ServerSettings, warm_up: bool | None = None) -> Filler:
    """Load the model into this process: the one place the server imports torch and transformers.

    warm_up: True compiles and times the model before returning (see the module docstring); None, off
    the main thread (the server's and the engine's model threads): as the `warmUp` setting says (on a
    thread of its own while the first fills run, or before returning); on the main thread (`canvas-ls
    fill`), and False: none."""
    t0 = time.perf_counter()
    from canvas_ls.model.cache_budget import shared_budget

    shared_budget().resize(settings.cacheBytes)  # the prompt K/V's bound (the shared engine has no other)
    # Compiled kernels in ~/.cache/canvas-ls/inductor: set before torch's first look at it (loading the
    # model's packed ops looks, and would settle on /tmp/torchinductor_<user>, emptied at each boot).
    from canvas_ls.model.step import compile_cache_dir

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(compile_cache_dir()))

    from canvas_ls.model.infill import Infiller
    from canvas_ls.model.loading import load_model
    from canvas_ls.model.tiny import build_tiny_checkpoint

    path = model_dir_for(settings)
    if path == demo_model_dir() and not _current_demo(path):
        log.warning("no model configured and none bundled: building a tiny random-weight model at %s", path)
        tmp = path.with_name(f"tiny-model.tmp{os.getpid()}")
        build_tiny_checkpoint(tmp)  # about 10 s, once
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and not _current_demo(path):
            shutil.rmtree(path, ignore_errors=True)
        try:
            tmp.rename(path)
        except OSError:  # another process won the race; use theirs
            shutil.rmtree(tmp, ignore_errors=True)
    loaded = load_model(path, device=settings.device, dtype=settings.dtype)
    loaded.canvas_length = min(loaded.canvas_length, settings.canvasLength)
    prompt = settings.maxPromptTokens
    if loaded.trained_prompt_tokens:  # a checkpoint trained on shorter prompts gets no longer ones
        prompt = min(prompt, int(loaded.trained_prompt_tokens))
    filler = Infiller(
        loaded, max_prompt_tokens=prompt, make_judge=make_judge, compile=settings.compile, threads=settings.threads
    )
    log.info("model loaded in %.1f s", time.perf_counter() - t0)
    if warm_up is None and threading.current_thread() is not threading.main_thread():
        warm_up = settings.warmUp == "first"  # else in the background (next line)
        if not warm_up:
            filler.start_warm_up(settings.sampler_settings())  # fills go on meanwhile, eager and on the canvas
    if warm_up:
        try:
            filler.warm_up(settings.sampler_settings())
        except Exception:  # never lose a loaded model to its warm-up: fills run eager, on the canvas
            log.warning("model warm-up failed; fills run eager, on the canvas", exc_info=True)
    return filler


class ModelHost:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._filler: Filler | None = None
        self.error: str | None = None
        self._failed: tuple[tuple, ModelLoadError] | None = None  # the settings that failed, and why

    def get(self, settings: ServerSettings) -> Filler:
        """The Filler for these settings; raises ModelLoadError with a readable message.

        A load that failed is not retried (nor logged again) until the model settings change: every
        inline request would otherwise pay for the failure and repeat it in the log."""
        key = settings.model_key()
        with self._lock:
            if self._filler is not None and key == self._key:
                return self._filler
            if self._failed is not None and self._failed[0] == key:
                raise self._failed[1]
            old, self._filler, self._key = self._filler, None, None
            if old is not None:
                old.close()  # drop connections (the shared engine serves others until idle), stop a warm-up
            try:
                if settings.backend == "shared":
                    from .engine.client import connect_or_start  # only servers of this backend load it

                    filler = connect_or_start(settings)  # the engine loads the model with load_in_process
                elif settings.backend == "vllm":
                    # No network call here: the server is probed on the first fill, and a server that is
                    # down then is tried again on the next one (its failures are per fill, never cached).
                    from .vllm import VllmFiller  # only servers of this backend load it (and httpx)

                    filler = VllmFiller(
                        url=settings.vllmUrl,
                        api_key=os.environ.get(settings.vllmApiKeyEnv) or None,
                        timeout=settings.vllmTimeout,
                        tokenizer_path=settings.tokenizerPath,
                        make_judge=make_judge,
                        max_prompt_tokens=settings.maxPromptTokens,  # the plan's prompt, as in-process
                    )
                else:
                    filler = load_in_process(settings)
            except Exception as exc:  # ModelLoadError, or anything else a broken checkpoint makes transformers raise
                err = (
                    exc
                    if isinstance(exc, ModelLoadError)
                    else ModelLoadError(f"could not load the model: {type(exc).__name__}: {exc}")
                )
                self.error, self._failed = str(err), (key, err)
                log.error("model not loaded: %s", err)  # once per failing setting, one line
                log.debug("model load traceback", exc_info=True)
                if err is exc:
                    raise
                raise err from exc
            self._filler, self._key, self.error, self._failed = filler, key, None, None
            log.info("model loaded: %s", filler.info().describe())
            return filler

    @property
    def current(self) -> Filler | None:
        return self._filler
