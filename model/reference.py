"""The reference sampler: transformers' `DiffusionGemmaForBlockDiffusion.generate()` on one canvas, as
plain functions over tensors; the model comes in as `step_fn`, as in model/sampler.py's `denoise`.

generate() with its default EntropyBoundSampler, LinearTemperatureScheduleLogitsProcessor and
StableAndConfidentStoppingCriteria does, for cur_step = N, N-1, ..., 1:
  1. logits = step_fn(canvas, self-conditioning logits)                                 (B, C, V)
  2. processed = logits / (t_min + (t_max - t_min) * cur_step / N)
  3. sample ~ softmax(processed) (one draw per position); argmax = processed.argmax(-1)
  4. acceptance over ALL positions, decided afresh every step: the lowest-entropy ones while
     (sum of their entropies - the largest) <= entropy_bound take the sample; every other position is
     re-noised with fresh random ids. A token accepted earlier and not again is re-noised: this is the
     model's self-correction.
  5. a row stops once its argmax canvas equals its last `stability_threshold` argmax canvases and its
     mean entropy is below `stop_entropy` (the generation config's confidence_threshold); a stopped
     row is frozen (its argmax, canvas and self-conditioning logits stay as they are). With `ends`
     (the Infiller passes it) only the slots up to each hole's end count: its first end token in the
     argmax (and, for a single-line row, its first token holding a newline); what follows is cut off
     anyway, so a row stops as soon as every hole has ended and what comes before is settled
  6. the self-conditioning logits of the next step are `processed`
The output is the argmax canvas of the last step (generate() then sets everything after a row's first
<eos> to <pad>: `pad_after_first_end`).

Infilling on top of it (the Infiller), per position:
  - held positions (text between holes, the suffix start, padding): their token is the input on every
    step and the output; they take no part in acceptance, stability or the mean entropy. Their
    self-conditioning input is zeroed by the Infiller's step function, as vLLM's `diffusion_pinned` does.
  - barred positions (syntax self-correction, `correct`): never accepted while barred, so re-noised.
Random draws come from one generator for the whole batch (drawn exactly as generate() draws: the
equivalence test seeds it as torch's global generator), or from one generator per row (each row draws
over its own width, so a row's fill does not depend on its batch-mates; for one row they draw what the
global generator draws). With `fast_draws` (the Infiller) per-row streams take `position_statistics`: the
same statistics from one log-softmax, a sample by inverse CDF at the free positions only: the same
distributions as generate()'s, other draws, at a fraction of the sampler's CPU time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from .canvas import CanvasBatch, CanvasStep, DenoiseOutput, NoiseSpec
from .interface import FillCancelled
from .settings import SamplerSettings

# Syntax self-correction: how many steps (this one included) the blamed positions stay barred.
BAR_STEPS = 2

Generators = torch.Generator | list[torch.Generator] | None  # None: torch's global generator
# correct(row, argmax row (C,)) -> (syntax errors found, canvas positions to bar); (0, []) when clean
Correct = Callable[[int, torch.Tensor], tuple[int, list[int]]]


@dataclass(frozen=True)
class ReferenceParams:
    steps: int  # N: max_denoising_steps
    entropy_bound: float
    t_min: float  # temperature at cur_step 0 (never reached: the last step is cur_step 1)
    t_max: float  # temperature at the first step (cur_step N)
    stability_threshold: int | None  # None (or stop_entropy None): no early stop
    stop_entropy: float | None

    @classmethod
    def from_settings(cls, settings: SamplerSettings) -> ReferenceParams:
        """From settings resolved against the checkpoint (`SamplerSettings.resolved`); a field still None
        takes the published value."""
        s = replace(settings, sampler="reference").resolved()
        return cls(
            steps=s.max_steps,
            entropy_bound=float(s.entropy_bound),
            t_min=float(s.temperature_end),
            t_max=float(s.temperature_start),
            stability_threshold=s.stability_threshold if s.early_stop else None,
            stop_entropy=s.stop_entropy if s.early_stop else None,
        )

    @property
    def early_stop(self) -> bool:
        return self.stability_threshold is not None and self.stop_entropy is not None


def make_generators(seeds: list[int], device: torch.device) -> list[torch.Generator]:
    """One random stream per row, so a row's fill does not depend on what else is in the batch."""
    gens = []
    for s in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(int(s))
        gens.append(g)
    return gens


def after_first_end(is_end: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """Hole slots after the first slot of the same hole marked in is_end (batch, canvas) bool."""
    is_end = (is_end & (hole >= 0)).long()  # (batch, canvas)
    seen = torch.cumsum(is_end, dim=1) - is_end  # ends strictly before each position
    # The count at each hole's first slot, so the count restarts per hole.
    first = torch.ones_like(hole, dtype=torch.bool)
    first[:, 1:] = hole[:, 1:] != hole[:, :-1]
    start_idx = torch.where(first, torch.arange(hole.shape[1], device=hole.device), 0)
    start_idx = torch.cummax(start_idx, dim=1).values
    before_hole = seen.gather(1, start_idx)
    return (hole >= 0) & (seen - before_hole > 0)


def temperature(cur_step: int, p: ReferenceParams, device: torch.device) -> torch.Tensor:
    """The step's temperature as transformers computes it: a float32 scalar tensor from an int32 step."""
    step = torch.tensor(cur_step, device=device, dtype=torch.int32)
    return p.t_min + ((p.t_max - p.t_min) * (step / p.steps))


def token_entropy(processed: torch.Tensor) -> torch.Tensor:
    """Entropy of each position's distribution (B, C, V) -> (B, C), exactly as transformers computes it."""
    return torch.distributions.Categorical(logits=processed).entropy()


def accept_entropy_bound(entropy: torch.Tensor, eligible: torch.Tensor | None, bound: float) -> torch.Tensor:
    """EntropyBoundSampler.accept_canvas's mask over the eligible positions. (B, C) -> (B, C) bool.

    The lowest-entropy positions while (cumulative entropy - the current one) <= bound; ineligible
    positions sort last at +inf and are never taken. With every position eligible (eligible None) this
    is exactly the reference's computation (so the first position is always taken: 0 <= bound)."""
    ent = entropy if eligible is None else torch.where(eligible, entropy, torch.full_like(entropy, float("inf")))
    sorted_ent, order = torch.sort(ent, dim=-1, descending=False)
    cumulative = torch.cumsum(sorted_ent, dim=-1)
    chosen = (cumulative - sorted_ent <= bound) & torch.isfinite(sorted_ent)  # inf - inf is nan: False anyway
    return torch.scatter(input=torch.zeros_like(chosen), dim=-1, index=order, src=chosen)


def draw_noise(ids: torch.Tensor, noise: NoiseSpec, gens: Generators, widths: list[int]) -> torch.Tensor:
    """A fully noised canvas shaped like ids (B, C): random vocabulary ids (uniform) or <mask> (absorbing).
    One generator: one draw over the whole batch, as EntropyBoundSampler.initialize_canvas. Per-row
    generators: each row draws over its own width; columns past it are <pad>."""
    if noise.kind == "absorbing":
        return torch.full_like(ids, noise.mask_id)
    if not isinstance(gens, list):
        return torch.randint(low=0, high=noise.vocab_size, size=tuple(ids.shape), device=ids.device, generator=gens)
    out = torch.full_like(ids, noise.pad_id)
    for r, (g, w) in enumerate(zip(gens, widths)):
        out[r, :w] = torch.randint(0, noise.vocab_size, (w,), generator=g, device=ids.device)
    return out


def draw_samples(probs: torch.Tensor, gens: Generators, widths: list[int], rows: list[bool]) -> torch.Tensor:
    """One token per position from probs (B, C, V) float32, with torch.multinomial as the reference does.
    Per-row generators: only the rows marked in `rows` draw (a stopped row draws nothing more)."""
    b, c, v = probs.shape
    if not isinstance(gens, list):
        return torch.multinomial(probs.view(-1, v), num_samples=1, generator=gens).squeeze(-1).view(b, c)
    out = torch.zeros((b, c), dtype=torch.long, device=probs.device)
    for r, (g, w) in enumerate(zip(gens, widths)):
        if rows[r]:
            out[r, :w] = torch.multinomial(probs[r, :w], num_samples=1, generator=g).squeeze(-1)
    return out


def vocab_block(vocab_size: int) -> int:
    """The block size of `position_statistics`' probability mass per block (a divisor of the vocabulary)."""
    return next((d for d in (128, 256, 64, 512, 32) if vocab_size % d == 0), vocab_size)


def position_statistics(
    logits: torch.Tensor, banned: torch.Tensor, temperature: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(processed, lse, entropy, top, argmax, mass) of every position: steps 2-3 of generate() for
    `fast_draws`, from one log-softmax (a third of the passes over the vocabulary). logits (B, C, V)
    float32; banned (V,) bool, the ids never drawn (-inf); temperature a 0-d tensor. processed (B, C, V);
    then (B, C): log-sum-exp, entropy (as Categorical.entropy), the largest processed logit and its id;
    mass (B, C, V // block) the probability of each block of `vocab_block(V)` ids, for `draw_rows`.
    The Infiller's DecoderStep compiles this beside the decoder pass (one fused pass over the vocabulary
    instead of one per operation: 28 -> 6 ms a step on a 128 canvas with a 12K vocabulary, one core)."""
    processed = logits.masked_fill(banned, float("-inf")) / temperature
    lse = torch.logsumexp(processed, dim=-1, keepdim=True)
    logp = processed - lse
    probs = logp.exp()
    entropy = -(probs * logp.clamp(min=torch.finfo(logp.dtype).min)).sum(-1)
    top, argmax = processed.max(dim=-1)
    b, c, v = processed.shape
    block = vocab_block(v)
    mass = probs.view(b, c, v // block, block).sum(-1)
    return processed, lse.squeeze(-1), entropy, top, argmax, mass


Statistics = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]


def draw_rows(
    processed: torch.Tensor,
    lse: torch.Tensor,
    mass: torch.Tensor,
    gens: list[torch.Generator],
    widths: list[int],
    rows: list[bool],
    free: torch.Tensor | None,
) -> torch.Tensor:
    """One sample (B, C) per position from softmax(processed) (B, C, V), with `position_statistics`' lse
    (B, C) and block mass (B, C, blocks), for per-row random streams: by inverse CDF from one uniform
    each, at the free positions of the rows still denoising only (held ones are overwritten anyway).
    (torch.multinomial draws an exponential per vocabulary entry: ~8 ms a step at 32 x 12K.) Two levels:
    the uniform picks a block by the blocks' cumulative mass, then an id by the cumulative probability
    inside that block, so only a block's worth of float64 per position is ever made (one level over the
    whole vocabulary made and page-faulted megabytes every step: ~2.5 ms of a 32 x 12K step)."""
    n_rows, width, vocab = processed.shape
    n_blocks = mass.shape[-1]
    block = vocab // n_blocks
    sample = torch.zeros((n_rows, width), dtype=torch.long, device=processed.device)
    tiny = torch.finfo(torch.float64).tiny
    for r, (g, w) in enumerate(zip(gens, widths)):
        if not rows[r]:
            continue
        pos = free[r, :w].nonzero().squeeze(1) if free is not None else torch.arange(w, device=processed.device)
        cum_mass = mass[r, pos].to(torch.float64).cumsum(-1)  # (n, blocks)
        u = torch.rand((len(pos), 1), generator=g, device=processed.device, dtype=torch.float64).clamp_(min=1e-300)
        target = u * cum_mass[:, -1:]  # (n, 1), in (0, total]
        blk = torch.searchsorted(cum_mass, target).clamp_(max=n_blocks - 1)  # the first block reaching it: mass > 0
        before = torch.where(blk > 0, cum_mass.gather(1, (blk - 1).clamp(min=0)), torch.zeros_like(target))
        inside = processed[r].view(width, n_blocks, block)[pos, blk.squeeze(1)]  # (n, block)
        cdf = (inside - lse[r, pos, None]).exp().to(torch.float64).cumsum(-1)
        # Rounding between the block's float32 mass and its float64 sum: keep the target inside
        # (0, block total], so the first id reaching it always has a probability above zero.
        rest = torch.minimum((target - before).clamp_(min=tiny), cdf[:, -1:])
        sample[r, pos] = (blk * block + torch.searchsorted(cdf, rest).clamp_(max=block - 1)).squeeze(1)
    return sample


class StableAndConfident:
    """StableAndConfidentStoppingCriteria over the free positions of each row (all of them for a
    continuation, where it computes exactly what transformers computes)."""

    def __init__(self, stability_threshold: int, stop_entropy: float):
        self.stability_threshold = stability_threshold
        self.stop_entropy = stop_entropy
        self.history: torch.Tensor | None = None  # (stability_threshold, B, C) earlier argmax canvases

    def __call__(self, argmax: torch.Tensor, entropy: torch.Tensor, free: torch.Tensor | None) -> torch.Tensor:
        """argmax, entropy: (B, C); free: (B, C) bool, or None for all positions. -> (B,) bool."""
        if self.stability_threshold == 0:
            stable = torch.ones(argmax.shape[0], device=argmax.device, dtype=torch.bool)
        else:
            if self.history is None:
                self.history = torch.full(
                    (self.stability_threshold, *argmax.shape), -1, dtype=argmax.dtype, device=argmax.device
                )
            same = self.history == argmax[None, :, :]
            if free is not None:
                same = same | ~free[None]
            stable = same.all(dim=-1).all(dim=0)
            self.history = torch.roll(self.history, shifts=-1, dims=0)
            self.history[-1] = argmax
        if free is None:
            mean = torch.mean(entropy, dim=-1)
        else:
            mean = torch.where(free, entropy, 0).sum(-1) / free.sum(-1).clamp(min=1)
        return stable & (mean < self.stop_entropy)

    def forget(self, row: int) -> None:
        """Row `row` must be stable again from now on (after a syntax correction)."""
        if self.history is not None:
            self.history[:, row] = -1


def pad_after_first_end(ids: torch.Tensor, end_ids: tuple[int, ...], pad_id: int) -> torch.Tensor:
    """What generate() does to a finished canvas: every token after a row's first end token -> <pad>."""
    is_end = torch.isin(ids, torch.tensor(end_ids, device=ids.device))
    seen = is_end.cumsum(dim=-1)
    after = (seen > 0) & ~((seen == 1) & is_end)
    return torch.where(after, torch.full_like(ids, pad_id), ids)


def with_held(batch: CanvasBatch, free: torch.Tensor | None, ids: torch.Tensor) -> torch.Tensor:
    """ids (B, C) with the batch's held tokens in place (a continuation, free None, holds none)."""
    return ids if free is None else torch.where(batch.held, batch.ids, ids)


class Sampling:
    """Steps 2-3 of generate(): the temperature, then one sample per position. fast_draws (per-row
    generators only): `statistics` (`position_statistics` or the step's compiled form of it) and
    `draw_rows` instead of generate()'s computations: the same distributions, other random draws, a
    fraction of the sampler's time (see the module docstring)."""

    def __init__(
        self,
        params: ReferenceParams,
        noise: NoiseSpec,
        gens: Generators,
        widths: list[int],
        free: torch.Tensor | None,
        fast_draws: bool,
        statistics: Statistics,
        device: torch.device,
        no_end: torch.Tensor | None = None,
        end_delay: int = 0,
    ):
        self.params, self.device = params, device
        # (B, C) bool: positions where the end tokens may not be drawn (a hole's first min_fill_tokens slots)
        self.no_end = no_end if no_end is not None and bool(no_end.any()) else None
        # the first end_delay steps draw no end token at any free position
        self.end_delay, self.all_free = end_delay, free if free is not None else None
        self.end_ids = [int(i) for i in noise.end_ids]
        self.gens, self.widths, self.free, self.statistics = gens, widths, free, statistics
        self.fast = fast_draws and isinstance(gens, list)
        self.banned = torch.tensor(noise.banned_ids, device=device, dtype=torch.long)
        self.banned_mask = torch.zeros(noise.vocab_size, dtype=torch.bool, device=device).index_fill_(
            0, self.banned, True
        )  # (V,)

    def __call__(
        self, logits: torch.Tensor, cur_step: int, rows: list[bool]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """logits (B, C, V) at cur_step; rows: those that draw (still denoising). -> the processed logits
        (B, C, V), then (B, C): the sample, the argmax, the entropy and the argmax's log-probability (float64)."""
        temp = temperature(cur_step, self.params, self.device)  # a 0-d tensor, as transformers has it
        barred = self.no_end
        if self.params.steps - cur_step < self.end_delay and self.all_free is not None:
            barred = self.all_free if barred is None else barred | self.all_free
        if barred is not None:
            logits = logits.clone()
            for e in self.end_ids:
                logits[..., e].masked_fill_(barred, float("-inf"))
        if self.fast:  # one log-softmax serves every statistic
            processed, lse, entropy, top, argmax, mass = self.statistics(logits, self.banned_mask, temp)
            sample = draw_rows(processed, lse, mass, self.gens, self.widths, rows, self.free)
            return processed, sample, argmax, entropy, (top - lse).double()
        # One stream: exactly as generate() computes and draws.
        if self.banned.numel():
            logits = logits.index_fill(-1, self.banned, float("-inf"))
        processed = logits / temp
        probs = torch.softmax(processed, dim=-1, dtype=torch.float32)
        sample = draw_samples(probs, self.gens, self.widths, rows)
        logp = (processed.max(dim=-1).values - torch.logsumexp(processed, dim=-1)).double()
        return processed, sample, torch.argmax(processed, dim=-1), token_entropy(processed), logp


class EarlyStop:
    """Step 5 of generate(): which rows have stopped. A stopped row is frozen: `keep` gives it its old
    value of whatever the step computes anew (argmax, entropy, self-conditioning logits, canvas)."""

    def __init__(
        self, params: ReferenceParams, batch: CanvasBatch, free: torch.Tensor | None, ends: torch.Tensor | None
    ):
        early = params.early_stop
        self.criteria = StableAndConfident(params.stability_threshold, params.stop_entropy) if early else None
        self.batch, self.free, self.ends = batch, free, ends
        self.finished = torch.zeros(batch.ids.shape[0], dtype=torch.bool, device=batch.ids.device)  # (B,)
        self.steps = [0] * batch.ids.shape[0]  # forward passes each row took part in while denoising

    def begin_step(self) -> list[bool]:
        """The rows still denoising (the step's one host read); each takes a step more."""
        denoising = [not d for d in self.finished.tolist()]
        self.steps = [s + d for s, d in zip(self.steps, denoising)]
        return denoising

    def keep(self, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        """new (B, ...) with the finished rows' old values."""
        return torch.where(self.finished.view(-1, *[1] * (new.dim() - 1)), old, new)

    def would_stop(self, argmax: torch.Tensor, entropy: torch.Tensor) -> torch.Tensor:
        """The rows that stop after this step (B,) bool, from its argmax and entropy (B, C). With `ends`
        only the slots up to each hole's end count: what follows is cut off anyway."""
        if self.criteria is None:
            return torch.zeros_like(self.finished)
        if self.ends is None:
            return self.criteria(argmax, entropy, self.free)
        counted = after_first_end(self.ends.gather(1, argmax), self.batch.hole).logical_not_()
        return self.criteria(argmax, entropy, counted if self.free is None else counted & self.free)

    def keep_denoising(self, stops: torch.Tensor, rows: list[int]) -> None:
        """Take back these rows' stop (stops (B,) bool, in place): each must be stable again from now on."""
        for r in rows:
            stops[r] = False
            self.criteria.forget(r)


class Corrections:
    """Syntax self-correction. `correct` is asked about a row's argmax fill (held tokens in place) on
    every step of the second half of the schedule and whenever the row would stop, never twice about
    the same fill; the positions it blames are barred from acceptance (so re-noised) for BAR_STEPS
    steps, at most max_corrections times per row."""

    def __init__(self, correct: Correct | None, max_corrections: int, steps: int, batch: CanvasBatch):
        n_rows, width = batch.ids.shape
        self.correct = correct if max_corrections > 0 else None
        self.max_corrections, self.half, self.batch = max_corrections, steps // 2, batch
        self.barred = torch.zeros(n_rows, width, dtype=torch.long, device=batch.ids.device)  # (B, C) steps left
        self.barring = 0  # steps some position stays barred (host side: no device read to know it)
        self.corrections, self.errors_found = [0] * n_rows, [0] * n_rows
        self.judged: list[tuple | None] = [None] * n_rows  # the fill last shown to `correct`, per row

    def ask(self, cur_step: int, argmax: torch.Tensor, denoising: list[bool], stops: torch.Tensor) -> list[int]:
        """Ask about the rows due (argmax (B, C), stops (B,) bool) and bar what `correct` blames. Returns the
        rows that would stop with a blamed fill: they keep denoising (except on the last step)."""
        if self.correct is None:
            return []
        stopping = stops.tolist()
        shown = torch.where(self.batch.held, self.batch.ids, argmax)  # (B, C)
        blamed_stops = []
        for r in range(len(denoising)):
            if (
                not denoising[r]
                or self.corrections[r] >= self.max_corrections
                or not (stopping[r] or cur_step <= self.half)
            ):
                continue
            key = tuple(shown[r].tolist())
            if key == self.judged[r]:
                continue
            self.judged[r] = key
            found, positions = self.correct(r, shown[r])
            if not positions:
                continue
            self.corrections[r] += 1
            self.errors_found[r] += found
            self.barred[r, torch.tensor(sorted(set(positions)), device=self.barred.device, dtype=torch.long)] = (
                BAR_STEPS
            )
            self.barring = BAR_STEPS
            if stopping[r] and cur_step > 1:
                blamed_stops.append(r)
        return blamed_stops

    def eligible(self, free: torch.Tensor | None) -> torch.Tensor | None:
        """The positions that may be accepted (B, C) bool: the free ones not barred (None: all)."""
        if not self.barring:
            return free
        return (self.barred == 0) if free is None else (free & (self.barred == 0))

    def tick(self) -> None:
        """A step is over: every bar has a step less to go."""
        if self.barring:
            self.barred = (self.barred - 1).clamp_(min=0)
            self.barring -= 1


class History:
    """The argmax canvases of the last keep_last steps before the final one (DenoiseOutput.history), so
    that a caller can choose among them (Infiller._pick); the loop itself is unchanged."""

    def __init__(self, keep_last: int, batch: CanvasBatch, free: torch.Tensor | None):
        self.keep_last, self.batch, self.free = keep_last, batch, free
        self.entries: list[tuple[torch.Tensor, torch.Tensor, list[bool]]] = []

    def add(self, argmax: torch.Tensor, logp: torch.Tensor, denoising: list[bool]) -> None:
        """A step's argmax (B, C) and its log-probabilities (B, C): for the rows still denoising, a candidate fill."""
        if self.keep_last:
            entry = (with_held(self.batch, self.free, argmax), logp, denoising)
            self.entries = (self.entries + [entry])[-(self.keep_last + 1) :]

    def before_last(self) -> list[tuple[torch.Tensor, torch.Tensor, list[bool]]]:
        return self.entries[:-1]  # the last entry is the final step's: that is the output


def canvas_step(
    forward_passes: int,
    shown: torch.Tensor,
    accepted: torch.Tensor,
    held: torch.Tensor,
    over: torch.Tensor,
    steps: list[int],
    n_steps: int,
    fixes: Corrections,
) -> CanvasStep:
    """The step's event. shown, accepted, held (B, C); over (B,) bool: rows finished (or the last step).
    A position not accepted this step is noise again ("open"); a finished row's canvas is its argmax,
    the output, so nothing in it is open."""
    open_ = ~accepted & ~held & ~over[:, None]
    active = tuple((~over).tolist())
    return CanvasStep(
        forward_passes, shown, open_, tuple(steps), (n_steps,) * len(steps), tuple(fixes.corrections), active
    )


@torch.inference_mode()
def reference_denoise(
    step_fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    batch: CanvasBatch,
    params: ReferenceParams,
    noise: NoiseSpec,
    gens: Generators,
    *,
    on_step: Callable[[CanvasStep], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    correct: Correct | None = None,
    max_corrections: int = 0,
    sc_dtype: torch.dtype | None = None,
    ends: torch.Tensor | None = None,
    fast_draws: bool = False,
    statistics: Statistics = position_statistics,
    keep_last: int = 0,
    no_end: torch.Tensor | None = None,
    end_delay: int = 0,
) -> DenoiseOutput:
    """Denoise every row of `batch` as generate() does; see the module docstring.

    step_fn(canvas (B, C) long, self-conditioning logits (B, C, V) or None) -> logits (B, C, V). ends: (B, V)
    bool, the tokens that end a hole in each row (None: every free position counts for the stopping
    criteria, 5. above). correct, max_corrections: `Corrections`; keep_last: `History`; fast_draws,
    statistics, no_end ((B, C) bool: where no end token is drawn), end_delay (the first steps that draw
    no end token anywhere): `Sampling`. Without correct and ends this is exactly generate()'s loop. Returns
    the argmax canvas with held tokens in place, each output token's log-probability at its row's last
    step, and per row: steps, corrections, errors found, whether it stopped early; the kept history."""
    device = batch.ids.device
    n_rows, width = batch.ids.shape
    widths = batch.widths or [width] * n_rows
    free = None if not bool(batch.held.any()) else ~batch.held  # (B, C); None: a continuation, all free
    sample_step = Sampling(params, noise, gens, widths, free, fast_draws, statistics, device, no_end, end_delay)
    rows, fixes = EarlyStop(params, batch, free, ends), Corrections(correct, max_corrections, params.steps, batch)
    history = History(keep_last, batch, free)
    canvas = with_held(batch, free, draw_noise(batch.ids, noise, gens, widths))  # (B, C) all noise
    argmax, entropy, sc_logits = canvas, torch.zeros(n_rows, width, device=device), None  # (B, C), (B, C)
    out_logp, forward_passes = torch.zeros(n_rows, width, device=device, dtype=torch.float64), 0  # (B, C)

    for cur_step in reversed(range(1, params.steps + 1)):  # N, N-1, ..., 1
        if cancelled is not None and cancelled():
            raise FillCancelled()
        denoising = rows.begin_step()  # the rows that draw
        logits = step_fn(canvas, sc_logits)  # (B, C, V)
        forward_passes += 1
        processed, sample, new_argmax, new_entropy, logp = sample_step(logits, cur_step, denoising)
        if not all(denoising):  # a stopped row stays as it was
            new_argmax, new_entropy = rows.keep(new_argmax, argmax), rows.keep(new_entropy, entropy)
            processed = rows.keep(processed, sc_logits)  # (B, C, V)
        stops = rows.would_stop(new_argmax, new_entropy)  # (B,)
        rows.keep_denoising(stops, fixes.ask(cur_step, new_argmax, denoising, stops))  # a blamed fill is not done

        # Accept afresh over all (eligible) positions; re-noise every other one.
        accepted = accept_entropy_bound(new_entropy, fixes.eligible(free), params.entropy_bound)  # (B, C)
        new_canvas = with_held(batch, free, torch.where(accepted, sample, draw_noise(canvas, noise, gens, widths)))
        if not all(denoising):
            new_canvas, accepted = rows.keep(new_canvas, canvas), accepted & ~rows.finished[:, None]
        out_logp = rows.keep(logp, out_logp)
        history.add(new_argmax, logp, denoising)

        canvas, argmax, entropy = new_canvas, new_argmax, new_entropy
        rows.finished = rows.finished | stops
        sc_logits = processed if sc_dtype is None else processed.to(sc_dtype)  # self-conditioning: step 6
        fixes.tick()
        if on_step is not None:
            shown, over = with_held(batch, free, argmax), rows.finished | (cur_step == 1)  # (B, C), (B,)
            on_step(canvas_step(forward_passes, shown, accepted, batch.held, over, rows.steps, params.steps, fixes))
        if bool(rows.finished.all()):
            break

    return DenoiseOutput(
        ids=with_held(batch, free, argmax),
        token_logp=out_logp,
        forward_passes=forward_passes,
        repairs=fixes.corrections,
        steps=rows.steps,
        errors_found=fixes.errors_found,
        stopped_early=rows.finished.tolist(),
        history=history.before_last(),
    )
