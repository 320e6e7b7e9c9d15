"""canvas-ls, the model side: loading checkpoints, the prompt K/V cache, the canvas and the denoising loop.

Never imports LSP code. The server reaches it through `interface.py` (plain Python) and loads the rest
only when it loads a model. `training/` (corpus, training, export) is never imported by the server.
"""

from pathlib import Path

BUNDLED_DIR = Path(__file__).parent / "bundled"


def default_model_path() -> Path | None:
    """The bundled model shipped with this install, if it has one."""
    return BUNDLED_DIR if (BUNDLED_DIR / "config.json").exists() else None
