"""The one JSON form of a fill's outcome: what `canvas-ls fill --json` prints and what the fill and
repair commands (canvas.fillSelection, canvas.fillBody, canvas.repairSelection) answer, so the two
cannot drift. Each caller adds its own keys around it (the CLI: file, language, spans, model; the
commands: applied, reason, edits).

    mode            "single", "multi", "line", "body", "selection", "repair" or "none"
    note            why there is no edit, or what was left out ("" when nothing to say)
    forwardPasses   decoder passes of the whole batch the fill ran in (FillResult.forward_passes)
    denoisingSteps  denoising steps the fill's own rows took, <= forwardPasses (FillResult.steps)
    tokens          tokens written (a repair: those re-noised)
    tokensPerPass   tokens / forwardPasses
    seconds         the model's time for the fill
    canvasLength, candidates, repairs (syntax repair rounds), errorsFound (syntax errors found while
    denoising), syntaxErrors (those left), sampler, decoderChoice (why a single line took the path it
    did), threads (CPU threads of the in-process model; 0 for another backend)
    changedTokens   a repair only: tokens that differ from the selection's own
"""

from __future__ import annotations

from .pipeline import FillOutcome


def fill_json(outcome: FillOutcome) -> dict:
    """The outcome's JSON keys (camelCase, JSON types only); zeros and "" when the model was not called."""
    r = outcome.result
    out = {
        "mode": outcome.mode,
        "note": outcome.note,
        "forwardPasses": r.forward_passes if r else 0,
        "denoisingSteps": r.steps if r else 0,
        "tokens": r.tokens if r else 0,
        "tokensPerPass": round(r.tokens_per_pass, 3) if r else 0,
        "seconds": round(r.seconds, 4) if r else 0,
        "canvasLength": r.canvas_length if r else 0,
        "candidates": r.candidates if r else 0,
        "repairs": r.repairs if r else 0,
        "errorsFound": r.errors_found if r else 0,
        "syntaxErrors": r.syntax_errors if r else 0,
        "sampler": r.sampler if r else "",
        "decoderChoice": r.choice if r else "",
        "threads": r.threads if r else 0,
    }
    if outcome.mode == "repair":
        out["changedTokens"] = r.changed_tokens if r else 0
    return out
