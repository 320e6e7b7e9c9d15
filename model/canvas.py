"""A batch of canvas rows on the device, as the denoising loops (model/reference.py, model/sampler.py)
take and give it. How a request's rows are laid out is the plan's (model/plan.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # this module stays torch-free at import: the vLLM backend reads model/ without torch
    import torch

    from .kv import PrefixState
    from .plan import RowLayout


@dataclass
class Row:
    """One canvas row of a batch: a request's candidate (slot counts) laid out, with its prompt."""

    request: int  # index of its request in the batch
    layout: RowLayout
    state: PrefixState  # the prompt's K/V (model/kv.py)
    seed: int
    width: int  # the row's own canvas length (the batch may be wider)


@dataclass(frozen=True)
class NoiseSpec:
    kind: str  # "uniform" | "absorbing"
    vocab_size: int
    mask_id: int | None
    pad_id: int
    end_ids: tuple[int, ...]  # tokens that end a hole's span: eos and pad
    banned_ids: tuple[int, ...]  # never sampled into a canvas: bos, mask

    def for_reference(self) -> NoiseSpec:
        """The reference sampler's noise, as generate() has it: nothing banned, except <mask> under
        absorbing noise (where it means "noise")."""
        return replace(self, banned_ids=(self.mask_id,) if self.kind == "absorbing" else ())


@dataclass
class CanvasBatch:
    ids: torch.Tensor  # (batch, canvas) long: held tokens in place; hole slots arbitrary
    held: torch.Tensor  # (batch, canvas) bool: never re-noised, never resampled
    hole: torch.Tensor  # (batch, canvas) long: hole index of each slot, -1 for held positions
    widths: list[int] | None = None  # each row's own canvas length; columns past it are padding


@dataclass(frozen=True)
class CanvasStep:
    """The whole batch after one denoising step; the Infiller turns it into each request's StepEvent."""

    step: int  # forward passes so far (1-based)
    ids: torch.Tensor  # (batch, canvas) the canvas after the step
    open: torch.Tensor  # (batch, canvas) bool: positions still noise
    round_step: tuple[int, ...]  # per row: steps taken in its current round
    round_steps: tuple[int, ...]  # per row: that round's budget
    repairs: tuple[int, ...]  # per row: repair rounds started
    active: tuple[bool, ...]  # per row: still denoising


@dataclass
class DenoiseOutput:
    ids: torch.Tensor  # (batch, canvas) final canvas
    token_logp: torch.Tensor  # (batch, canvas) log-probability of each committed token when committed
    forward_passes: int
    repairs: list[int]  # repair rounds (commit) or syntax corrections (reference) each row used
    steps: list[int] = field(default_factory=list)  # forward passes each row took part in while denoising
    errors_found: list[int] = field(default_factory=list)  # syntax errors the judge found while denoising
    stopped_early: list[bool] = field(default_factory=list)  # reference: stopped by the stopping criteria
    # reference with keep_last: the argmax canvases of the last steps before the final one, each as
    # (ids (batch, canvas) with held tokens in place, log-probability of each argmax token (batch, canvas),
    # the rows still denoising at that step): fills that compete with the final one (Infiller._pick)
    history: list[tuple[torch.Tensor, torch.Tensor, list[bool]]] = field(default_factory=list)
