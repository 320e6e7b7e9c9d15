"""The canvas or left to right: which path fills a request (`singleLineDecoder`). Plain Python.

A single-line request whose settings say "auto" takes the checkpoint's measured choice where it states
one (canvas_ls.json "single_line_decoder"; left to right only with code before the cursor on its line
and none after it, since the draft never sees the suffix), else the path expected to be faster
(model/costs.py): left to right wins when it saves MIN_SAVING_S and MIN_SAVING of the canvas's time.
Without measured costs the canvas fills. Earlier fills never count: a request keeps its path all session.
"""

from __future__ import annotations

from collections.abc import Callable

from .costs import Costs
from .interface import BadFill, FillRequest
from .settings import SamplerSettings

# Left to right only when that is expected to save at least this much, absolutely and relatively: less
# is within the noise of the timings (a path that flipped with the machine's load would make fills
# irreproducible), and nobody notices it in an inline completion.
MIN_SAVING_S, MIN_SAVING = 0.050, 0.25


def _at_line_end(request: FillRequest) -> bool:
    """Code before the cursor on its line and nothing after it (where the draft was measured better:
    benchmarks/dev_tasks.py --mid-line)."""
    text, (start, end) = request.text, request.holes[0]
    line_end = text.find("\n", end)
    rest = text[end : len(text) if line_end < 0 else line_end]
    before = text[text.rfind("\n", 0, start) + 1 : start]
    return bool(before.strip()) and not rest.strip()


def choose_decoder(
    request: FillRequest,
    checkpoint_choice: str | None,
    costs: Costs,
    canvas: Callable[[], tuple[int, int]],
) -> tuple[str, str]:
    """("diffusion" | "autoregressive", why) for a request filled alone; why is "" when nothing was
    chosen (the path was fixed). canvas() -> (the request's canvas width, its step budget), asked only
    when the costs decide."""
    if request.decoder == "autoregressive":
        return "autoregressive", ""
    s: SamplerSettings = request.settings
    if not request.single_line or len(request.holes) != 1 or s.single_line_decoder == "diffusion":
        return "diffusion", ""
    if s.single_line_decoder == "autoregressive":
        return "autoregressive", "single-line decoder: autoregressive"
    if checkpoint_choice == "autoregressive" and _at_line_end(request):
        return "autoregressive", "auto: autoregressive (the checkpoint's choice at a line's end)"
    if checkpoint_choice == "diffusion":
        return "diffusion", "auto: diffusion (the checkpoint's choice)"
    try:
        width, steps = canvas()
    except BadFill:
        return "diffusion", ""  # the canvas fill says why
    est = costs.estimate(width, steps, request.max_tokens)
    if est is None:
        return "diffusion", "auto: diffusion (costs not measured)"
    canvas_s, ltr_s = est
    faster = canvas_s - ltr_s >= max(MIN_SAVING_S, MIN_SAVING * canvas_s)
    pick = "autoregressive" if faster else "diffusion"
    return pick, f"auto: {pick} (estimated: canvas {1000 * canvas_s:.0f} ms, left to right {1000 * ltr_s:.0f} ms)"
