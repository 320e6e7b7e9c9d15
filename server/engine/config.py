"""The shared engine's configuration, declared once.

Every field of EngineConfig carries its help text. Generated from the fields: the engine's command-line
arguments (`canvas-ls engine --help`), the argv a language server spawns the engine with (`argv()`), the
config a language server derives from its ServerSettings (`from_settings`), and the ServerSettings the
engine loads its model with (`server_settings`). A field that mirrors a server setting takes its default
and documentation from ServerSettings.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..settings import ServerSettings
from .protocol import EnginePaths, default_run_dir, engine_paths, model_key

_SETTINGS = {f.name: f for f in fields(ServerSettings)}


def _setting(name: str) -> Any:
    """A field that mirrors the server setting `name` (its default and help come from ServerSettings)."""
    f = _SETTINGS[name]
    return field(default=f.default, metadata={"setting": name, "help": f.metadata["doc"]})


def _own(default: Any, help: str) -> Any:
    """A field of the engine alone."""
    return field(default=default, metadata={"setting": None, "help": help})


@dataclass(frozen=True)
class EngineConfig:
    # the model key (see protocol.model_key) ...
    model: str = _setting("modelPath")
    device: str = _setting("device")
    dtype: str = _setting("dtype")
    max_prompt_tokens: int = _setting("maxPromptTokens")
    canvas_length: int = _setting("canvasLength")
    # ... and how the engine that serves it runs
    threads: int = _setting("threads")
    cache_bytes: int = _setting("cacheBytes")
    idle_minutes: float = _setting("engineIdleMinutes")
    batch_window_ms: float = _own(5.0, "How long (ms) the oldest queued request waits for batch-mates.")
    max_batch: int = _own(16, "Most requests in one batch (one fill_batch call).")
    prefix_entries: int = _own(16, "Documents whose prompt K/V the engine keeps cached (least recently used go first).")
    run_dir: str = _own(
        "",
        "Directory for the socket, lock and log. Empty: $CANVAS_LS_RUN_DIR, else $XDG_RUNTIME_DIR/canvas-ls, else ~/.cache/canvas-ls/run.",
    )
    socket: str = _own(
        "", "Explicit socket path (lock and log beside it). Empty: named after the model key, in the run directory."
    )

    def key(self) -> list[str]:
        return model_key(self.model, self.device, self.dtype, self.max_prompt_tokens, self.canvas_length)

    def paths(self, key: list[str] | None = None) -> EnginePaths:
        if self.socket:
            return EnginePaths.beside(Path(self.socket))
        return engine_paths(key or self.key(), Path(self.run_dir) if self.run_dir else default_run_dir())

    def argv(self) -> list[str]:
        """Command-line arguments that reproduce this config (what a client passes when spawning)."""
        return [arg for f in fields(self) for arg in (_flag(f.name), str(getattr(self, f.name)))]

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        for f in fields(cls):
            parser.add_argument(
                _flag(f.name),
                dest=f.name,
                type=type(f.default),
                default=f.default,
                help=f.metadata["help"].replace("%", "%%"),
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EngineConfig:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    @classmethod
    def from_settings(cls, settings: ServerSettings, **overrides: Any) -> EngineConfig:
        """The engine a language server with these settings needs; overrides: any other fields."""
        mirrored = {f.name: getattr(settings, f.metadata["setting"]) for f in fields(cls) if f.metadata["setting"]}
        return cls(**{**mirrored, **overrides})

    def server_settings(self) -> ServerSettings:
        """The settings the engine loads its model with (server.model_host.load_in_process)."""
        return ServerSettings(
            **{f.metadata["setting"]: getattr(self, f.name) for f in fields(self) if f.metadata["setting"]}
        )


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
