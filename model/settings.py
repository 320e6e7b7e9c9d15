"""Sampler settings: one frozen dataclass, validated early with messages a user can act on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Acceptance = Literal["entropy", "confidence"]


@dataclass(frozen=True)
class SamplerSettings:
    # Upper bound on forward passes per canvas; the loop usually stops earlier because committed
    # tokens never need revisiting. At the last step every remaining position is taken at its argmax.
    max_steps: int = 16
    # "entropy": accept the lowest-entropy positions while (sum of their entropies - the largest)
    #   <= entropy_bound, as transformers' EntropyBoundSampler does.
    # "confidence": accept every position whose top probability >= confidence_threshold.
    acceptance: Acceptance = "entropy"
    entropy_bound: float = 0.1
    confidence_threshold: float = 0.9
    # Temperature falls linearly from start to end over max_steps (DiffusionGemma's defaults).
    temperature_start: float = 0.8
    temperature_end: float = 0.4
    # Syntax repair: how many times a fill that adds syntax errors is partly re-noised and denoised again.
    repair_rounds: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.max_steps, int) or not 1 <= self.max_steps <= 1024:
            problems.append(f"max_steps must be an integer in 1..1024, got {self.max_steps!r}")
        if self.acceptance not in ("entropy", "confidence"):
            problems.append(f"acceptance must be 'entropy' or 'confidence', got {self.acceptance!r}")
        if not _is_number(self.entropy_bound) or self.entropy_bound <= 0:
            problems.append(f"entropy_bound must be a number > 0, got {self.entropy_bound!r}")
        if not _is_number(self.confidence_threshold) or not 0 < self.confidence_threshold <= 1:
            problems.append(f"confidence_threshold must be in (0, 1], got {self.confidence_threshold!r}")
        for name in ("temperature_start", "temperature_end"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                problems.append(f"{name} must be a number >= 0, got {value!r}")
        if not isinstance(self.repair_rounds, int) or not 0 <= self.repair_rounds <= 8:
            problems.append(f"repair_rounds must be an integer in 0..8, got {self.repair_rounds!r}")
        if not isinstance(self.seed, int):
            problems.append(f"seed must be an integer, got {self.seed!r}")
        if problems:
            raise ValueError("; ".join(problems))

    def temperature(self, step: int) -> float:
        if self.max_steps == 1:
            return self.temperature_end
        frac = step / (self.max_steps - 1)
        return self.temperature_start + (self.temperature_end - self.temperature_start) * frac


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
