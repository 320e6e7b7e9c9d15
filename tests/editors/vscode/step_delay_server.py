"""`canvas-ls serve` that holds each denoising step of a command fill for a while: for screenshots only.

    python step_delay_server.py --step-delay SECONDS serve [serve's arguments]

The bundled model fills a function body in about a second on a CPU, too fast for a screenshot to catch
the live canvas at a chosen step. This wrapper, used by screenshots.py as `canvas.serverPath` +
`canvas.serverArgs`, makes the model thread sleep after each step of a command fill (Fill Selection,
Fill Function Body, Repair Selection) once the step has been handed to the event loop, so every
canvas/step notification stays on screen for SECONDS. Inline completions are not slowed. The fill
itself (settings, seed, result) is the server's own: nothing else is changed, and the product never
sleeps.
"""

from __future__ import annotations

import sys
import time


def main(argv: list[str]) -> int:
    delay = 0.0
    if argv[:1] == ["--step-delay"]:
        delay, argv = float(argv[1]), argv[2:]

    from canvas_ls.server import fill_job
    from canvas_ls.server.cli import main as canvas_ls_main

    original = fill_job.FillJob._on_step

    def on_step_with_delay(self, loop):
        deliver = original(self, loop)
        if self.kind != "command" or delay <= 0:
            return deliver

        def on_step(event):
            deliver(event)
            time.sleep(delay)

        return on_step

    fill_job.FillJob._on_step = on_step_with_delay
    return canvas_ls_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
