"""What a fill costs on this machine, for choosing between the canvas and left-to-right decoding.

Plain Python. `Infiller.warm_up` measures a denoising step (a decoder pass plus the sampler's work) at
a few canvas widths and a left-to-right token, and fills one calibration line both ways: the passes
the canvas took (how much the model settles per pass) and the tokens the line took left to right.
A single line is then expected to cost

    canvas:         the calibration's passes (at most the request's step budget) x a step at its width
    left to right:  the calibration's tokens, the ending one included (at most the slots + 1) x a token

The prompt's encoding is common to both and left out. Nothing here depends on earlier fills, so a
request takes the same path for the whole session (the same fill, whatever the server filled before),
and warm-up keeps what it measured per model and machine (model/measured.py), so every server of one
installation on one machine weighs the same costs, whatever the load while it warmed up.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Costs:
    pass_s: dict[int, float] = field(default_factory=dict)  # canvas width -> seconds per step
    token_s: float | None = None  # seconds per left-to-right token
    line_passes: int | None = None  # the calibration line: passes its canvas fill took
    line_tokens: int | None = None  # ... and the passes (tokens) it took left to right

    def set_pass(self, width: int, seconds: float) -> None:
        self.pass_s[int(width)] = float(seconds)

    def set_token(self, seconds: float) -> None:
        self.token_s = float(seconds)

    def pass_at(self, width: int) -> float | None:
        """Seconds per step at `width`: the measured value, else the line through the two nearest
        measured widths (a fixed part plus a part per canvas token), never below the cheapest."""
        if not self.pass_s:
            return None
        if width in self.pass_s:
            return self.pass_s[width]
        points = sorted(self.pass_s.items(), key=lambda wt: abs(wt[0] - width))[:2]
        if len(points) == 1:
            return points[0][1]
        (w0, t0), (w1, t1) = sorted(points)
        slope = max(0.0, (t1 - t0) / (w1 - w0))
        return max(min(self.pass_s.values()), t0 + slope * (width - w0))

    def pass_ms(self, width: int) -> float | None:
        p = self.pass_at(width)
        return None if p is None else round(1000 * p, 2)

    def token_ms(self) -> float | None:
        return None if self.token_s is None else round(1000 * self.token_s, 2)

    def to_json(self) -> dict:
        """What model/measured.py records."""
        return {
            "pass_s": {str(w): s for w, s in sorted(self.pass_s.items())},
            "token_s": self.token_s,
            "line_passes": self.line_passes,
            "line_tokens": self.line_tokens,
        }

    @classmethod
    def from_json(cls, data: dict) -> Costs:
        """The inverse of to_json (raises KeyError, TypeError or ValueError on a record of another shape)."""
        costs = cls({int(w): float(s) for w, s in data["pass_s"].items()})
        costs.token_s = None if data["token_s"] is None else float(data["token_s"])
        costs.line_passes = None if data["line_passes"] is None else int(data["line_passes"])
        costs.line_tokens = None if data["line_tokens"] is None else int(data["line_tokens"])
        return costs

    def set_line(self, canvas_passes: int, left_to_right_passes: int) -> None:
        """The calibration line, filled on the canvas and left to right."""
        self.line_passes, self.line_tokens = int(canvas_passes), int(left_to_right_passes)

    def estimate(self, width: int, step_budget: int, max_tokens: int) -> tuple[float, float] | None:
        """(canvas seconds, left-to-right seconds) for a single line, or None before warm-up measured."""
        step = self.pass_at(width)
        if step is None or self.token_s is None:
            return None
        passes = min(self.line_passes if self.line_passes is not None else step_budget, step_budget)
        tokens = min(self.line_tokens if self.line_tokens is not None else max_tokens + 1, max_tokens + 1)
        return passes * step, tokens * self.token_s
