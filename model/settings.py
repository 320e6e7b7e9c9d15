"""Sampler settings: one frozen dataclass, validated early with messages a user can act on.

A field left at None takes the checkpoint's value: its generation_config.json (`GenerationDefaults`,
read by model/loading.py) and, for `sampler: "auto"`, its canvas_ls.json. `resolved()` fills them in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

Acceptance = Literal["entropy", "confidence"]
Sampler = Literal["auto", "reference", "commit"]
SAMPLERS = ("auto", "reference", "commit")
LineDecoder = Literal["auto", "diffusion", "autoregressive"]
LINE_DECODERS = ("auto", "diffusion", "autoregressive")

# The commit loop's own step budget when max_steps is left to the checkpoint: it commits every token
# once, so it needs far fewer steps than the reference's 48.
COMMIT_STEPS = 16


@dataclass(frozen=True)
class GenerationDefaults:
    """A checkpoint's generation_config.json, the part a sampler reads. The defaults are the published
    DiffusionGemma values (transformers' `DiffusionGemmaGenerationConfig._get_default_generation_params`),
    which transformers also uses for a key the file leaves out or sets to null."""

    max_steps: int = 48  # max_denoising_steps
    entropy_bound: float = 0.1  # sampler_config.entropy_bound
    t_min: float = 0.4  # temperature at the last step
    t_max: float = 0.8  # temperature at the first step
    stability_threshold: int = 1  # steps the argmax canvas must stay the same to stop early
    confidence_threshold: float = 0.005  # ... and the mean entropy it must fall below

    @classmethod
    def from_generation_config(cls, gen: dict[str, Any]) -> GenerationDefaults:
        """From generation_config.json's content; raises ValueError naming a bad value."""
        sampler = gen.get("sampler_config") or {}
        if not isinstance(sampler, dict):
            raise ValueError(f"sampler_config must be an object, got {sampler!r}")
        cls_name = sampler.get("_cls_name", "EntropyBoundSamplerConfig")
        if cls_name != "EntropyBoundSamplerConfig":
            raise ValueError(f"sampler_config is a {cls_name}; canvas-ls knows only EntropyBoundSamplerConfig")
        d = cls()
        values = {
            "max_steps": gen.get("max_denoising_steps"),
            "entropy_bound": sampler.get("entropy_bound"),
            "t_min": gen.get("t_min"),
            "t_max": gen.get("t_max"),
            "stability_threshold": gen.get("stability_threshold"),
            "confidence_threshold": gen.get("confidence_threshold"),
        }
        out = replace(d, **{k: v for k, v in values.items() if v is not None})
        problems = []
        if not isinstance(out.max_steps, int) or isinstance(out.max_steps, bool) or out.max_steps < 1:
            problems.append(f"max_denoising_steps must be a positive integer, got {out.max_steps!r}")
        if (
            not isinstance(out.stability_threshold, int)
            or isinstance(out.stability_threshold, bool)
            or out.stability_threshold < 0
        ):
            problems.append(f"stability_threshold must be an integer >= 0, got {out.stability_threshold!r}")
        for name in ("entropy_bound", "t_min", "t_max", "confidence_threshold"):
            value = getattr(out, name)
            if not _is_number(value) or value < 0 or (value == 0 and name in ("entropy_bound", "confidence_threshold")):
                problems.append(
                    f"{name} must be a number {'> 0' if name in ('entropy_bound', 'confidence_threshold') else '>= 0'}, got {value!r}"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return out


PUBLISHED = GenerationDefaults()


@dataclass(frozen=True)
class SamplerSettings:
    # "reference": transformers' DiffusionGemmaForBlockDiffusion.generate() (EntropyBoundSampler): every
    #   step re-decides which positions to accept over all of them, the rest is re-noised, the output is
    #   the argmax canvas, and a canvas stops early once its argmax is stable and its mean entropy low.
    # "commit": canvas-ls's commit-once loop: an accepted token stays; a row ends when all are committed.
    # "auto": the checkpoint's default (canvas_ls.json "sampler"; DiffusionGemma checkpoints: reference).
    sampler: Sampler = "auto"
    # Most forward passes per canvas (None: the checkpoint's max_denoising_steps for the reference
    # sampler, COMMIT_STEPS for the commit loop). For commit, at the last step every remaining position
    # is taken at its argmax.
    max_steps: int | None = None
    # commit only. "entropy": accept the lowest-entropy positions while (sum of their entropies - the
    #   largest) <= entropy_bound, as transformers' EntropyBoundSampler does.
    # "confidence": accept every position whose top probability >= confidence_threshold.
    # The reference sampler always uses the entropy bound.
    acceptance: Acceptance = "entropy"
    entropy_bound: float | None = None  # None: the checkpoint's sampler_config.entropy_bound
    confidence_threshold: float = 0.9
    # Temperature falls linearly from start to end (None: the checkpoint's t_max and t_min).
    temperature_start: float | None = None
    temperature_end: float | None = None
    # reference only: stop a canvas early once its argmax stayed the same for stability_threshold steps
    # and its mean entropy is below stop_entropy (None: the checkpoint's stability_threshold and
    # confidence_threshold). early_stop=False always runs max_steps.
    early_stop: bool = True
    stability_threshold: int | None = None
    stop_entropy: float | None = None
    # Syntax repair. commit: how many times a finished fill that adds syntax errors is partly re-noised
    # and denoised again. reference: how many times, while denoising, the positions the syntax judge
    # blames are barred from acceptance (so re-noised) for a few steps.
    repair_rounds: int = 2
    # reference only: the argmax fills of up to this many steps before the last compete with the last
    # step's fill (fewest syntax errors, then the highest mean log-probability of its tokens; no extra
    # forward passes). 0: the last step's fill alone, as generate() returns it.
    step_candidates: int = 0
    seed: int = 0
    # Single-line completions (FillRequest.single_line). single_line_steps caps max_steps for them (None:
    # no cap): a line of ~12 tokens needs fewer steps than a block. single_line_decoder: "diffusion"
    # (the canvas), "autoregressive" (the same weights left to right) or "auto" (whichever the
    # backend expects to be faster, from what its passes and left-to-right tokens cost; a backend
    # without a left-to-right path fills on the canvas).
    single_line_steps: int | None = None
    single_line_decoder: LineDecoder = "diffusion"
    # Tokens of the text after the last hole held on the canvas at least (the canvas bucket's spare room
    # holds more); None: the backend's default. Small enough that a single line fits a small canvas.
    suffix_tokens: int | None = None
    # Left-to-right drafts: the prompt's last token is taken back and the first new token must start
    # with its text (model/autoregressive.py says why); False: the prompt ends exactly at the cursor.
    # The canvas never heals: it was trained on text cut at any character, tokenized piece by piece.
    token_healing: bool = True
    # reference only: end tokens (<eos>/<pad>) are barred from each hole's first min_fill_tokens slots, so
    # the model cannot close a hole before that many tokens (0: it may close it at once, as before).
    # Evaluation's oracle length (benchmarks/infill_eval.py --oracle) sets it to the canonical token count.
    min_fill_tokens: int = 0
    # reference only: the first end_delay share of the steps draws no end token at any hole slot, so the
    # content is drafted before the model decides where the hole ends (0: ends are drawn from the start).
    end_delay: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.token_healing, bool):
            problems.append(f"token_healing must be true or false, got {self.token_healing!r}")
        if self.sampler not in SAMPLERS:
            problems.append(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.max_steps is not None and (
            not isinstance(self.max_steps, int) or isinstance(self.max_steps, bool) or not 1 <= self.max_steps <= 1024
        ):
            problems.append(f"max_steps must be an integer in 1..1024, got {self.max_steps!r}")
        if self.acceptance not in ("entropy", "confidence"):
            problems.append(f"acceptance must be 'entropy' or 'confidence', got {self.acceptance!r}")
        if self.entropy_bound is not None and (not _is_number(self.entropy_bound) or self.entropy_bound <= 0):
            problems.append(f"entropy_bound must be a number > 0, got {self.entropy_bound!r}")
        if not _is_number(self.confidence_threshold) or not 0 < self.confidence_threshold <= 1:
            problems.append(f"confidence_threshold must be in (0, 1], got {self.confidence_threshold!r}")
        for name in ("temperature_start", "temperature_end"):
            value = getattr(self, name)
            if value is not None and (not _is_number(value) or value < 0):
                problems.append(f"{name} must be a number >= 0, got {value!r}")
        if not isinstance(self.early_stop, bool):
            problems.append(f"early_stop must be true or false, got {self.early_stop!r}")
        if self.stability_threshold is not None and (
            not isinstance(self.stability_threshold, int)
            or isinstance(self.stability_threshold, bool)
            or not 0 <= self.stability_threshold <= 64
        ):
            problems.append(f"stability_threshold must be an integer in 0..64, got {self.stability_threshold!r}")
        if self.stop_entropy is not None and (not _is_number(self.stop_entropy) or self.stop_entropy <= 0):
            problems.append(f"stop_entropy must be a number > 0, got {self.stop_entropy!r}")
        if not isinstance(self.repair_rounds, int) or not 0 <= self.repair_rounds <= 8:
            problems.append(f"repair_rounds must be an integer in 0..8, got {self.repair_rounds!r}")
        if self.single_line_steps is not None and (
            not isinstance(self.single_line_steps, int)
            or isinstance(self.single_line_steps, bool)
            or not 1 <= self.single_line_steps <= 1024
        ):
            problems.append(f"single_line_steps must be an integer in 1..1024, got {self.single_line_steps!r}")
        if self.single_line_decoder not in LINE_DECODERS:
            problems.append(
                f"single_line_decoder must be one of {', '.join(LINE_DECODERS)}, got {self.single_line_decoder!r}"
            )
        if self.suffix_tokens is not None and (
            not isinstance(self.suffix_tokens, int)
            or isinstance(self.suffix_tokens, bool)
            or not 0 <= self.suffix_tokens <= 4096
        ):
            problems.append(f"suffix_tokens must be an integer in 0..4096, got {self.suffix_tokens!r}")
        if not isinstance(self.min_fill_tokens, int) or not 0 <= self.min_fill_tokens <= 4096:
            problems.append(f"min_fill_tokens must be an integer in 0..4096, got {self.min_fill_tokens!r}")
        if not _is_number(self.end_delay) or not 0 <= self.end_delay < 1:
            problems.append(f"end_delay must be a number in [0, 1), got {self.end_delay!r}")
        if not isinstance(self.seed, int):
            problems.append(f"seed must be an integer, got {self.seed!r}")
        if problems:
            raise ValueError("; ".join(problems))

    def resolved(
        self, generation: GenerationDefaults | None = None, default_sampler: str = "reference"
    ) -> SamplerSettings:
        """These settings with every None (and "auto") replaced by the checkpoint's value: `generation`
        (the published values when None) and `default_sampler` (its canvas_ls.json "sampler")."""
        gen = generation or PUBLISHED
        sampler = default_sampler if self.sampler == "auto" else self.sampler
        if sampler not in ("reference", "commit"):
            raise ValueError(f"a checkpoint's default sampler must be 'reference' or 'commit', got {sampler!r}")
        return replace(
            self,
            sampler=sampler,
            max_steps=self.max_steps
            if self.max_steps is not None
            else (gen.max_steps if sampler == "reference" else COMMIT_STEPS),
            entropy_bound=self.entropy_bound if self.entropy_bound is not None else gen.entropy_bound,
            temperature_start=self.temperature_start if self.temperature_start is not None else gen.t_max,
            temperature_end=self.temperature_end if self.temperature_end is not None else gen.t_min,
            stability_threshold=self.stability_threshold
            if self.stability_threshold is not None
            else gen.stability_threshold,
            stop_entropy=self.stop_entropy if self.stop_entropy is not None else gen.confidence_threshold,
        )

    def temperature(self, step: int) -> float:
        """The commit loop's temperature at `step` (0-based): start at 0, end at max_steps - 1."""
        s = (
            self
            if None not in (self.max_steps, self.temperature_start, self.temperature_end)
            else replace(self, sampler="commit").resolved()
        )
        if s.max_steps == 1:
            return s.temperature_end
        frac = step / (s.max_steps - 1)
        return s.temperature_start + (s.temperature_end - s.temperature_start) * frac


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
