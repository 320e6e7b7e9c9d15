"""The denoising loop: plain functions over tensors; the model comes in as `step_fn`.

A canvas row holds hole slots (to be denoised) and held tokens (the suffix start, text between
holes, padding: set once, never re-noised). Each step:
  1. logits = step_fn(canvas, self-conditioning logits)             # (batch, canvas, vocab)
  2. sample a token for every position at the step's temperature
  3. commit some still-open positions (entropy bound or confidence threshold); committed tokens stay
  4. a committed <eos>/<pad> inside a hole ends that hole: its later slots become <pad>, committed.
     This is how the model chooses the fill's length instead of us.
  5. re-noise what is still open: random vocabulary ids (uniform noise) or <mask> (absorbing noise)
A row is done when every position is committed. A `repair` callback may then re-open positions
(the tokens from the first syntax error to the hole's end) for another, shorter round.

Only one small host read per step (which rows are done); everything else stays on the device.
This is the `sampler: "commit"` loop; model/reference.py holds the reference (transformers') sampler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from .canvas import CanvasBatch, CanvasStep, DenoiseOutput, NoiseSpec
from .interface import FillCancelled
from .reference import after_first_end
from .settings import SamplerSettings


def noise_like(ids: torch.Tensor, noise: NoiseSpec, gens: list[torch.Generator], widths: list[int]) -> torch.Tensor:
    """A fully noised canvas of the same shape: random ids, or all <mask>.

    Each row draws only for its own width, so its random stream does not depend on its batch-mates.
    """
    if noise.kind == "absorbing":
        return torch.full_like(ids, noise.mask_id)
    out = torch.full_like(ids, noise.pad_id)
    for r, (g, w) in enumerate(zip(gens, widths)):
        out[r, :w] = torch.randint(0, noise.vocab_size, (w,), generator=g, device=ids.device)
    return out


SAMPLE_TOP_K = 64


def sample_rows(logp: torch.Tensor, gens: list[torch.Generator], widths: list[int]) -> torch.Tensor:
    """One token per position from log-probs (batch, canvas, vocab), each row over its own width.

    Gumbel-max over the 64 most likely tokens: at these temperatures the rest carry negligible mass,
    the draws stay small for a 262K vocabulary, and unlike inverse-CDF sampling the choice does not
    flip on the ~1e-7 differences between a batched and a single forward pass.
    """
    k = min(SAMPLE_TOP_K, logp.shape[-1])
    top_v, top_i = logp.topk(k, dim=-1)  # (batch, canvas, k)
    out = torch.zeros(logp.shape[:2], dtype=torch.long, device=logp.device)
    for r, (g, w) in enumerate(zip(gens, widths)):
        u = torch.rand((w, k), generator=g, device=logp.device).clamp_(1e-20, 1.0)
        pick = (top_v[r, :w] - torch.log(-torch.log(u))).argmax(-1, keepdim=True)  # (w, 1)
        out[r, :w] = top_i[r, :w].gather(-1, pick).squeeze(-1)
    return out


def select_entropy_bound(entropy: torch.Tensor, open_: torch.Tensor, bound: float) -> torch.Tensor:
    """Lowest-entropy open positions while (sum of entropies - the largest) <= bound; at least one.

    entropy, open_: (batch, canvas). As in transformers' EntropyBoundSampler: the left side bounds the
    mutual information among the chosen tokens, so they are nearly independent and can be taken together.
    """
    ent = torch.where(open_, entropy, torch.full_like(entropy, float("inf")))
    sorted_ent, order = torch.sort(ent, dim=-1)
    cum = torch.cumsum(sorted_ent.nan_to_num(posinf=0.0), dim=-1)
    chosen = (cum - sorted_ent <= bound) & torch.isfinite(sorted_ent)
    chosen[:, 0] |= torch.isfinite(sorted_ent[:, 0])  # progress: the best open position always goes
    return torch.zeros_like(open_).scatter(1, order, chosen)


def select_confidence(top_prob: torch.Tensor, open_: torch.Tensor, threshold: float) -> torch.Tensor:
    """Open positions whose top probability >= threshold; at least the most confident one."""
    chosen = open_ & (top_prob >= threshold)
    best = torch.where(open_, top_prob, torch.full_like(top_prob, -1.0)).argmax(dim=-1, keepdim=True)
    has_open = open_.any(dim=-1, keepdim=True)
    return chosen | (torch.zeros_like(open_).scatter(1, best, has_open))


def close_ended_holes(ids: torch.Tensor, committed: torch.Tensor, hole: torch.Tensor, noise: NoiseSpec) -> torch.Tensor:
    """Positions after a committed end token within the same hole. (batch, canvas) bool.

    Holes are contiguous runs of slots; `hole` gives each slot's hole index (-1 elsewhere).
    """
    end_ids = torch.tensor(noise.end_ids, device=ids.device)
    return after_first_end(committed & torch.isin(ids, end_ids), hole)


def accept(settings: SamplerSettings, entropy: torch.Tensor, probs: torch.Tensor, open_: torch.Tensor) -> torch.Tensor:
    """The open positions (B, C) bool to commit this step, by settings.acceptance; entropy (B, C), probs (B, C, V)."""
    if settings.acceptance == "entropy":
        return select_entropy_bound(entropy, open_, settings.entropy_bound)
    return select_confidence(probs.max(-1).values, open_, settings.confidence_threshold)


def ended_slots(
    ids: torch.Tensor, committed: torch.Tensor, hole: torch.Tensor, noise: NoiseSpec, ends: torch.Tensor | None
) -> torch.Tensor:
    """The uncommitted slots (B, C) bool after a committed end of their hole: the fill is over there.
    ends (B, V) bool or None: the end tokens."""
    if ends is None:
        return close_ended_holes(ids, committed, hole, noise) & ~committed
    return after_first_end(committed & ends.gather(1, ids), hole) & ~committed


class Rounds:
    """Each row's rounds: the first of settings.max_steps steps, then, each time `repair` re-opens some of
    a finished row's positions (at most settings.repair_rounds times), a shorter one. The round's step
    drives the temperature and its budget; a row is done when it finishes a round that repair accepts."""

    def __init__(self, settings: SamplerSettings, n_rows: int, repair: Callable[[int, torch.Tensor], list[int]] | None):
        self.settings, self.repair = settings, repair
        self.round_step = [0] * n_rows  # step within the current round, per row
        self.round_budget = [settings.max_steps] * n_rows
        self.repairs = [0] * n_rows
        self.active = [True] * n_rows
        self.steps = [0] * n_rows

    def temperatures(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Each row's temperature at its round's step (B,)."""
        s = self.settings
        return torch.tensor(
            [max(s.temperature(min(step, s.max_steps - 1)), 1e-4) for step in self.round_step],
            device=device,
            dtype=dtype,
        )

    def last_step(self, device: torch.device) -> torch.Tensor:
        """(B, 1) bool: the rows on their round's last step."""
        return torch.tensor([s + 1 >= b for s, b in zip(self.round_step, self.round_budget)], device=device)[:, None]

    def advance(
        self,
        done: list[bool],
        ids: torch.Tensor,
        committed: torch.Tensor,
        noise: NoiseSpec,
        gens: list[torch.Generator],
        widths: list[int],
    ) -> None:
        """A step is over; done: the active rows with every position committed. Each asks `repair`: the
        positions it re-opens are uncommitted and re-noised (ids, committed (B, C) in place) for a new,
        shorter round; a row it accepts (or out of repair rounds) stops."""
        for r in range(len(done)):
            if not self.active[r]:
                continue
            self.round_step[r] += 1
            self.steps[r] += 1
            if not done[r]:
                continue
            can_repair = self.repair is not None and self.repairs[r] < self.settings.repair_rounds
            reopen = self.repair(r, ids[r]) if can_repair else []
            if not reopen:
                self.active[r] = False
                continue
            self.repairs[r] += 1
            committed[r, torch.tensor(sorted(set(reopen)), device=ids.device, dtype=torch.long)] = False
            fresh = noise_like(ids[r : r + 1], noise, gens[r : r + 1], widths[r : r + 1])[0]  # (C,)
            ids[r] = torch.where(committed[r], ids[r], fresh)
            self.round_step[r] = 0
            self.round_budget[r] = max(2, self.settings.max_steps // 2)

    def event(self, forward_passes: int, ids: torch.Tensor, open_: torch.Tensor) -> CanvasStep:
        """The step's event: ids, open_ (B, C) the canvas and its positions still noise."""
        return CanvasStep(
            forward_passes,
            ids,
            open_,
            tuple(self.round_step),
            tuple(self.round_budget),
            tuple(self.repairs),
            tuple(self.active),
        )


@torch.inference_mode()
def denoise(
    step_fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    batch: CanvasBatch,
    settings: SamplerSettings,
    noise: NoiseSpec,
    gens: list[torch.Generator],
    *,
    on_step: Callable[[CanvasStep], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    repair: Callable[[int, torch.Tensor], list[int]] | None = None,
    ends: torch.Tensor | None = None,
) -> DenoiseOutput:
    """Denoise every row of `batch`; see the module docstring for the algorithm.

    step_fn(canvas (batch, canvas) long, self-conditioning logits or None) -> logits (batch, canvas, vocab).
    repair(row, row_ids (canvas,)) -> canvas positions to re-open; [] accepts the row as it is (see `Rounds`).
    ends: (batch, vocab) bool, the tokens that close the rest of a hole in each row (None: the end
    tokens): a single-line row is also over at its first committed newline, so it stops sooner.
    """
    settings = replace(settings, sampler="commit").resolved()  # None fields: the commit loop's defaults
    device = batch.ids.device
    n_rows, width = batch.ids.shape
    widths = batch.widths or [width] * n_rows
    banned = torch.tensor(noise.banned_ids, device=device, dtype=torch.long)
    committed = batch.held.clone()  # (B, C): held tokens are committed from the start
    ids = torch.where(committed, batch.ids, noise_like(batch.ids, noise, gens, widths))  # (B, C)
    token_logp = torch.zeros(n_rows, width, device=device, dtype=torch.float64)  # (B, C)
    rounds = Rounds(settings, n_rows, repair)
    sc_logits, forward_passes = None, 0

    while any(rounds.active):
        if cancelled is not None and cancelled():
            raise FillCancelled()
        logits = step_fn(ids, sc_logits)  # (B, C, V), float32 (float64 for an fp64 model)
        forward_passes += 1
        if banned.numel():
            logits.index_fill_(-1, banned, float("-inf"))
        scaled = logits / rounds.temperatures(device, logits.dtype)[:, None, None]  # (B, C, V)
        logp = torch.log_softmax(scaled, dim=-1)  # (B, C, V)
        probs = logp.exp()
        entropy = -(probs * logp.nan_to_num(neginf=0.0)).sum(-1)  # (B, C)
        sample = sample_rows(logp, gens, widths)  # (B, C)

        # Commit some open positions; out of steps, everything still open goes, at its most likely token.
        open_ = ~committed & torch.tensor(rounds.active, device=device)[:, None]  # (B, C)
        last = rounds.last_step(device)  # (B, 1)
        chosen = torch.where(last, open_, accept(settings, entropy, probs, open_) & open_)
        sample = torch.where(last, logp.argmax(-1), sample)
        ids = torch.where(chosen, sample, ids)
        token_logp = torch.where(chosen, logp.gather(-1, sample[..., None]).squeeze(-1).double(), token_logp)
        committed = committed | chosen
        ended = ended_slots(ids, committed, batch.hole, noise, ends)  # a hole's end closes its later slots
        ids = torch.where(ended, torch.full_like(ids, noise.pad_id), ids)
        committed = committed | ended

        # Re-noise what is still open; self-conditioning reads the processed logits, as in transformers.
        open_ = ~committed
        ids = torch.where(open_, noise_like(ids, noise, gens, widths), ids)
        sc_logits = scaled
        rounds.advance((~open_.any(dim=1)).tolist(), ids, committed, noise, gens, widths)  # the one host read
        if on_step is not None:
            on_step(rounds.event(forward_passes, ids, ~committed))

    return DenoiseOutput(
        ids=ids,
        token_logp=token_logp,
        forward_passes=forward_passes,
        repairs=rounds.repairs,
        steps=rounds.steps,
        errors_found=[0] * n_rows,
        stopped_early=[False] * n_rows,
    )
