"""`canvas-ls serve` with a scripted model backend, for exact protocol tests (test support only).

The real server module runs unchanged; only its ModelHost is replaced by one whose Filler returns known
fills, so every assertion about edits, progress, live canvas and cancellation can fail. The script comes
from the environment variable CANVAS_SCRIPT (JSON):

    {"fills": ["x + 1"],      # per hole, in order (a hole past the list gets the last one)
     "steps": 4,              # StepEvents before the result
     "step_seconds": 0.0,     # sleep per step (cancellation is checked before each)
     "repairs": [{"old": "totl", "new": "total", "p": 0.01}],
                              # repair requests (repair_threshold set): in each hole's text, the first
                              # `old` whose probability p is below the threshold becomes `new`; the
                              # rest is kept; none below it: no steps, nothing changed
     "can_repair": true}      # FillerInfo.repair: false plays a backend that cannot repair

    python tests/scripted_server.py            (what tests/scripted.py's start_scripted runs)
"""

from __future__ import annotations

import json
import os
import sys
import time

from canvas_ls.model.interface import OPEN_SLOT, FillCancelled, FillerInfo, FillRequest, FillResult, StepEvent
from canvas_ls.server import cli
from canvas_ls.server.lsp import server


class ScriptedFiller:
    def __init__(self, script: dict) -> None:
        self.fills = list(script.get("fills", ["FILL"]))
        self.steps = int(script.get("steps", 4))
        self.step_seconds = float(script.get("step_seconds", 0.0))
        self.repairs = list(script.get("repairs", []))
        self.can_repair = bool(script.get("can_repair", True))  # FillerInfo.repair
        self.requests = 0  # fills asked for (not the requests: each holds its document's whole text)
        self.forgotten: list[str] = []

    def fill(self, request: FillRequest, on_step=None, cancelled=None) -> FillResult:
        self.requests += 1
        if request.repair_threshold is not None:
            return self.repair(request, on_step, cancelled)
        fills = tuple(self.fills[min(i, len(self.fills) - 1)] for i in range(len(request.holes)))
        for step in range(1, self.steps + 1):
            if cancelled is not None and cancelled():
                raise FillCancelled()
            time.sleep(self.step_seconds)
            if on_step is not None:
                shown = tuple(
                    f[: len(f) * step // self.steps] + OPEN_SLOT * (len(f) - len(f) * step // self.steps) for f in fills
                )
                on_step(
                    StepEvent(
                        step=step,
                        round_step=step,
                        round_steps=self.steps,
                        repair=0,
                        committed=step,
                        slots=self.steps,
                        texts=shown,
                    )
                )
        return FillResult(
            fills=fills,
            score=0.0,
            forward_passes=self.steps,
            tokens=sum(map(len, fills)),
            seconds=0.0,
            canvas_length=32,
            slots=(len(fills[0]),),
            candidates=1,
            repairs=0,
            syntax_errors=0,
            prompt_tokens=1,
            reused_prompt_tokens=0,
        )

    def repair(self, request: FillRequest, on_step=None, cancelled=None) -> FillResult:
        """As model/repair.py answers: the low-probability `old`s re-noised, then denoised to `new`."""
        originals = [request.text[a:b] for a, b in request.holes]
        fills, shown, changed = [], [], 0  # shown: the hole with the re-noised text as open slots
        for text in originals:
            fill, open_ = text, text
            for r in self.repairs:
                at = fill.find(r["old"])
                if r.get("p", 0.0) < request.repair_threshold and at >= 0:
                    fill = fill[:at] + r["new"] + fill[at + len(r["old"]) :]
                    open_ = open_[:at] + OPEN_SLOT * len(r["new"]) + open_[at + len(r["old"]) :]
                    changed += 1
            fills.append(fill)
            shown.append(open_)
        steps = self.steps if changed else 0
        for step in range(1, steps + 1):
            if cancelled is not None and cancelled():
                raise FillCancelled()
            time.sleep(self.step_seconds)
            if on_step is not None:
                texts = tuple(fills) if step == steps else tuple(shown)
                on_step(
                    StepEvent(
                        step=step,
                        round_step=step,
                        round_steps=steps,
                        repair=0,
                        committed=changed if step == steps else 0,
                        slots=changed,
                        texts=texts,
                    )
                )
        return FillResult(
            fills=tuple(fills),
            score=0.0,
            forward_passes=1 + steps,
            tokens=changed,
            seconds=0.0,
            canvas_length=32,
            slots=tuple(map(len, originals)),
            candidates=1,
            repairs=0,
            syntax_errors=0,
            prompt_tokens=1,
            reused_prompt_tokens=0,
            steps=1 + steps,
            changed_tokens=changed,
        )

    def info(self) -> FillerInfo:
        return FillerInfo(
            model="scripted",
            path="",
            device="cpu",
            dtype="none",
            canvas_length=32,
            backend="scripted",
            repair=self.can_repair,
        )

    def forget(self, document: str) -> None:
        self.forgotten.append(document)

    def close(self) -> None:
        pass


class ScriptedHost:
    def __init__(self, filler: ScriptedFiller) -> None:
        self.current, self.error = filler, None

    def get(self, settings) -> ScriptedFiller:
        return self.current


if __name__ == "__main__":
    server.host = ScriptedHost(ScriptedFiller(json.loads(os.environ.get("CANVAS_SCRIPT", "{}"))))
    sys.exit(cli.main(["serve", "--log-level", "warning"]))
