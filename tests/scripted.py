"""Start `canvas-ls serve` with the scripted backend of tests/scripted_server.py (known fills and steps)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from canvas_ls.server.client import RecordingClient, start

SCRIPTED_SERVER = Path(__file__).parent / "scripted_server.py"


async def start_scripted(
    init_options: dict | None = None, *, fills=("FILL",), steps: int = 4, step_seconds: float = 0.0, **kw
) -> RecordingClient:
    script = {"fills": list(fills), "steps": steps, "step_seconds": step_seconds}
    env = {**os.environ, "CANVAS_SCRIPT": json.dumps(script)}
    return await start(init_options or {}, env=env, command=[sys.executable, str(SCRIPTED_SERVER)], **kw)
