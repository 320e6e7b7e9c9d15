"""Repair: the selected code is the starting canvas; only the tokens that look wrong are denoised again.

    result = repair_fill(infiller, FillRequest(text, holes=((a, b),), repair_threshold=0.05, language="python"))

1. The canvas is laid out as for a fill (model/plan.py), but each hole's slots hold the hole's own
   tokens (the selected code), so the canvas is the document as it is. The prompt (the text before the
   first hole) is in the K/V cache as usual.
2. One read-only decoder pass scores every token: p[pos] = softmax(logits)[pos, token at pos]
   (temperature 1, no self-conditioning input: the first step of any denoising).
3. Re-noised: hole tokens with p < threshold (a threshold >= 1 re-noises every token, 0 none), and the
   tokens the syntax judge blames. The judge sees the document with the selections removed, so errors
   the selected code itself brings are its own (judged against the document with it, they would be
   "explained" by themselves).
4. The re-noised positions are denoised with everything else held (the hole's other tokens, the text
   between holes, the suffix), by the request's sampler: the reference loop (model/reference.py, with
   syntax self-correction on the re-noised positions) or the commit loop (model/sampler.py). The number
   of tokens is fixed; an end token (<eos>/<pad>) at a re-noised position deletes that token.
5. Each hole's new text is its old text with only the runs of changed tokens replaced (the unchanged
   text is kept character for character), and `FillResult.changed_tokens` counts the changed tokens.
   No token re-noised: the fills are the hole texts and changed_tokens is 0 ("nothing to repair").

Plain functions over tensors; the model comes in through the Infiller (its loaded model, tokenizer,
prefix encoder, noise spec and judge factory).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .canvas import CanvasBatch, CanvasStep, DenoiseOutput
from .interface import OPEN_SLOT, Cancelled, FillCancelled, FillRequest, FillResult, Judge, OnStep, StepEvent
from .plan import CanvasTooSmall, bucket_for, lay_out, needed_length
from .reference import ReferenceParams, make_generators, reference_denoise
from .sampler import denoise
from .step import decoder_logits

StepFn = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass
class RepairCanvas:
    ids: torch.Tensor  # (1, C) long: the hole slots hold the holes' own tokens, then middles, suffix, <pad>
    hole: torch.Tensor  # (1, C) long: hole index of each slot, -1 elsewhere
    slots: list[list[int]]  # per hole: its canvas positions, in order
    tokens: list[list[int]]  # per hole: its original token ids (= ids at slots)
    width: int  # C


# ---- tokens <-> characters ------------------------------------------------------------------


class Text:
    """The infiller's tokenizer as a repair uses it: encode/decode without special tokens added or
    cleaned up, and `drop`, the ids that are no text (end tokens, <bos>, <mask>)."""

    def __init__(self, infiller):
        self.text = infiller.text  # model/text.py
        self.drop = set(self.text.vocab.ends | self.text.vocab.dropped)

    def encode(self, text: str) -> list[int]:
        return self.text.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.text.decode(ids)


def token_bounds(decode: Callable[[list[int]], str], ids: list[int]) -> list[int | None]:
    """Character offset, in decode(ids), where each token boundary k (0..len(ids)) lies; None where a
    boundary splits a character (a byte-level token holding part of a UTF-8 character)."""
    full = decode(ids)
    out: list[int | None] = [0]
    for k in range(1, len(ids) + 1):
        head = decode(ids[:k])
        out.append(len(head) if full.startswith(head) and "\ufffd" not in head[-1:] else None)
    out[-1] = len(full)
    return out


def blamed_tokens(bounds: list[int | None], ranges: list[tuple[int, int]]) -> list[int]:
    """Indices of the tokens the judge's character ranges (within the hole's text) touch. A zero-width
    range (a MISSING node) blames the tokens on both sides of it; a range at or past the text's end (it
    broke the code after the hole) blames the last token."""
    n = len(bounds) - 1
    if n == 0:
        return []
    # Each token's character span; a token whose boundary is unknown borrows its neighbour's.
    known = [b for b in bounds]
    for k in range(1, n + 1):
        if known[k] is None:
            known[k] = known[k - 1]
    end_text = known[n] or 0
    out: set[int] = set()
    for a, b in ranges:
        lo, hi = (a - 1, a + 1) if b <= a else (a, b)
        for k in range(n):
            start, end = known[k], known[k + 1]
            if start < hi and end > lo:
                out.add(k)
        if b >= end_text or a >= end_text:
            out.add(n - 1)
    return sorted(out)


def splice(decode: Callable[[list[int]], str], old: list[int], new: list[int], drop: set[int], text: str) -> str:
    """`text` (the hole's text, which old (n,) tokenizes) with each run of changed tokens replaced by the
    decoded new tokens (n,) of that run, end/special tokens in `drop` left out. Runs widen to boundaries
    that split no character. Unchanged tokens keep their exact characters."""
    bounds = token_bounds(decode, old)
    base = text if decode(old) == text else decode(old)
    pieces, cursor, k, n = [], 0, 0, len(old)
    while k < n:
        if new[k] == old[k]:
            k += 1
            continue
        i, j = k, k + 1
        while j < n and new[j] != old[j]:
            j += 1
        while i > 0 and bounds[i] is None:
            i -= 1
        while j < n and bounds[j] is None:
            j += 1
        start, end = bounds[i], bounds[j]
        pieces.append(base[cursor:start])
        pieces.append(decode([t for t in new[i:j] if t not in drop]))
        cursor, k = end, j
    pieces.append(base[cursor:])
    return "".join(pieces)


# ---- the canvas and the passes -------------------------------------------------------------


def lay_out_selection(infiller, tx: Text, request: FillRequest) -> RepairCanvas:
    """The canvas of a repair: each hole's slots hold its own tokens (see lay_out for the rest)."""
    lm = infiller.loaded
    text, holes = request.text, request.holes
    tokens = [tx.encode(text[a:b]) for a, b in holes]
    middles = [tx.encode(text[a[1] : b[0]]) for a, b in zip(holes, holes[1:])]
    suffix = tx.encode(text[holes[-1][1] :][: 4 * lm.canvas_length])
    counts = [len(t) for t in tokens]
    own = sum(counts) + sum(map(len, middles))
    if own > lm.canvas_length:
        raise CanvasTooSmall(
            f"the selection is {own} tokens; this model's canvas holds {lm.canvas_length}: repair a smaller selection"
        )
    # the suffix held as for a fill: the plan's limits (model/plan.py) from the same settings
    width = bucket_for(
        needed_length(counts, middles, suffix, infiller.limits(request.settings).suffix_min), lm.canvas_length
    )
    layout = lay_out(counts, middles, suffix, width, lm.pad_id)
    ids = list(layout.ids)
    slots: list[list[int]] = [[] for _ in holes]
    for pos, h in enumerate(layout.hole):
        if h >= 0:
            slots[h].append(pos)
    for h, positions in enumerate(slots):
        for pos, tid in zip(positions, tokens[h]):
            ids[pos] = tid
    device = lm.device
    return RepairCanvas(
        ids=torch.tensor([ids], device=device),
        hole=torch.tensor([layout.hole], device=device),
        slots=slots,
        tokens=tokens,
        width=width,
    )


def make_step_fn(infiller, state, width: int, keep: torch.Tensor) -> StepFn:
    """The decoder pass over a (1, C) canvas after the prompt `state`; the self-conditioning input is
    zeroed where keep (1, C) is False (held positions), as vLLM's diffusion_pinned does."""
    model = infiller.loaded.model
    cache, masks, lengths = infiller.prefix.decoder_cache([state], width, [width])
    positions = lengths[:, None] + torch.arange(width, device=lengths.device)[None]  # (1, C)
    step = getattr(infiller, "step", None)  # the Infiller's DecoderStep (compiled once warmed up), if it has one

    def step_fn(canvas: torch.Tensor, sc_logits: torch.Tensor | None) -> torch.Tensor:
        if callable(step):
            return step(canvas, sc_logits, keep, cache, positions, masks)  # (1, C, V)
        return decoder_logits(model, canvas, sc_logits, keep, cache, positions, masks)

    return step_fn


@torch.inference_mode()
def token_probabilities(step_fn: StepFn, canvas: torch.Tensor) -> torch.Tensor:
    """The read-only scoring pass: each position's probability of the token it holds. (1, C) -> (1, C)."""
    logits = step_fn(canvas, None)  # (1, C, V)
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, canvas[..., None]).squeeze(-1).exp()


def low_confidence(probs: torch.Tensor, in_hole: torch.Tensor, threshold: float) -> torch.Tensor:
    """Hole positions whose token the model finds unlikely: p < threshold; every one for a threshold
    >= 1, none for 0. probs, in_hole: (1, C) -> (1, C) bool."""
    if threshold >= 1.0:
        return in_hole.clone()
    return in_hole & (probs < threshold)


def strip_holes(text: str, holes: tuple[tuple[int, int], ...]) -> tuple[str, tuple[tuple[int, int], ...]]:
    """The document without the holes' text, and the (empty) holes where it was."""
    pieces, spans, cursor, removed = [], [], 0, 0
    for a, b in holes:
        pieces.append(text[cursor:a])
        spans.append((a - removed, a - removed))
        removed += b - a
        cursor = b
    pieces.append(text[cursor:])
    return "".join(pieces), tuple(spans)


def _hole_tokens(row: list[int], slots: list[int], drop: set[int]) -> list[int]:
    return [row[p] for p in slots if row[p] not in drop]


def blamed_positions(tx: Text, judge: Judge, canvas: RepairCanvas, row: list[int]) -> tuple[int, list[int]]:
    """(errors the judge reports for the holes' texts in `row` (C,), the canvas positions it blames)."""
    drop = tx.drop
    kept = [[p for p in slots if row[p] not in drop] for slots in canvas.slots]  # positions of the text's tokens
    fills = tuple(tx.decode([row[p] for p in k]) for k in kept)
    verdict = judge(fills)
    out: list[int] = []
    for h, ranges in enumerate(verdict):
        if ranges and kept[h]:
            bounds = token_bounds(tx.decode, [row[p] for p in kept[h]])
            out += [kept[h][k] for k in blamed_tokens(bounds, ranges)]
    return sum(map(len, verdict)), sorted(set(out))


def render(tx: Text, canvas: RepairCanvas, row: list[int], open_: list[bool]) -> tuple[str, ...]:
    """Each hole at this step: its tokens as text, still-open (re-noised) positions as OPEN_SLOT."""
    drop = tx.drop
    texts = []
    for slots in canvas.slots:
        pieces, run = [], []
        for p in slots:
            if open_[p]:
                pieces += [tx.decode(run), OPEN_SLOT]
                run = []
            elif row[p] not in drop:
                run.append(row[p])
        pieces.append(tx.decode(run))
        texts.append("".join(pieces))
    return tuple(texts)


# ---- the repair ---------------------------------------------------------------------------


def repair_fill(
    infiller, request: FillRequest, on_step: OnStep | None = None, cancelled: Cancelled | None = None
) -> FillResult:
    """Repair each hole's current text (see the module docstring). Raises BadFill, FillCancelled."""
    t0 = time.perf_counter()
    request.validate()
    lm = infiller.loaded
    threshold = float(request.repair_threshold)
    settings = request.settings.resolved(lm.generation, lm.default_sampler)
    text, holes = request.text, request.holes
    originals = tuple(text[a:b] for a, b in holes)
    tx = Text(infiller)

    canvas = lay_out_selection(infiller, tx, request)
    in_hole = canvas.hole >= 0  # (1, C)
    state = infiller.prefix.encode(infiller.prompt_ids(text[: holes[0][0]]), key=request.document)
    prompt_tokens, reused = len(state), infiller.prefix.last_reused
    judge = None
    if request.language is not None and infiller.make_judge is not None:
        stripped, empty = strip_holes(text, holes)
        judge = infiller.make_judge(stripped, empty, request.language)

    if cancelled is not None and cancelled():
        raise FillCancelled()
    probs = token_probabilities(make_step_fn(infiller, state, canvas.width, in_hole), canvas.ids)  # (1, C)
    renoise = low_confidence(probs, in_hole, threshold)  # (1, C) bool
    row0 = canvas.ids[0].tolist()
    found, blamed = blamed_positions(tx, judge, canvas, row0) if judge is not None else (0, [])
    if blamed:
        renoise[0, torch.tensor(blamed, device=renoise.device)] = True
    n_renoised = int(renoise.sum())

    def result(fills, out: DenoiseOutput | None, changed: int, score: float) -> FillResult:
        errors = sum(map(len, judge(fills))) if judge is not None else 0
        return FillResult(
            fills=fills,
            score=score,
            forward_passes=1 + (out.forward_passes if out else 0),
            tokens=n_renoised,
            seconds=time.perf_counter() - t0,
            canvas_length=canvas.width,
            slots=tuple(map(len, canvas.tokens)),
            candidates=1,
            repairs=out.repairs[0] if out else 0,
            syntax_errors=errors,
            prompt_tokens=prompt_tokens,
            reused_prompt_tokens=reused,
            errors_found=found + (out.errors_found[0] if out and out.errors_found else 0),
            steps=1 + (out.steps[0] if out and out.steps else 0),
            sampler=settings.sampler,
            changed_tokens=changed,
        )

    if n_renoised == 0:
        return result(originals, None, 0, 0.0)

    if on_step is not None:  # before denoising: the re-noised tokens as open slots
        texts = render(tx, canvas, row0, renoise[0].tolist())
        on_step(StepEvent(1, 0, settings.max_steps, 0, committed=0, slots=n_renoised, texts=texts))

    out = denoise_held(infiller, tx, canvas, renoise, state, settings, judge, on_step, cancelled)
    final = out.ids[0].tolist()
    changed = sum(1 for slots in canvas.slots for p in slots if final[p] != row0[p])
    fills = tuple(
        originals[h]
        if all(final[p] == row0[p] for p in slots)
        else splice(tx.decode, canvas.tokens[h], [final[p] for p in slots], tx.drop, originals[h])
        for h, slots in enumerate(canvas.slots)
    )
    logps = out.token_logp[0][renoise[0]].tolist()
    score = sum(logps) / len(logps) if logps else 0.0
    return result(fills, out, changed, score)


def _runs(renoised: list[bool]) -> list[int]:
    """Each run of re-noised positions as its own "hole" index (-1 elsewhere): the commit loop's end
    tokens close only their run."""
    holes, run = [], -1
    for p, on in enumerate(renoised):
        if on and (p == 0 or not renoised[p - 1]):
            run += 1
        holes.append(run if on else -1)
    return holes


def _events(tx: Text, canvas: RepairCanvas, free: set[int], on_step: OnStep) -> Callable[[CanvasStep], None]:
    """The sampler's steps as the repair's StepEvents (its step 1 was the scoring pass)."""
    n = len(free)

    def events(step: CanvasStep) -> None:
        row, open_ = step.ids[0].tolist(), step.open[0].tolist()
        budget = step.round_steps[0]
        on_step(
            StepEvent(
                step=step.step + 1,
                round_step=min(max(step.round_step[0], 1), budget),
                round_steps=budget,
                repair=step.repairs[0],
                committed=n - sum(open_[p] for p in free),
                slots=n,
                texts=render(tx, canvas, row, open_),
            )
        )

    return events


def denoise_held(
    infiller,
    tx: Text,
    canvas: RepairCanvas,
    renoise: torch.Tensor,
    state,
    settings,
    judge: Judge | None,
    on_step: OnStep | None,
    cancelled: Cancelled | None,
) -> DenoiseOutput:
    """Denoise the re-noised positions (1, C) with every other position held, by settings.sampler."""
    held = ~renoise  # (1, C)
    hole = torch.tensor([_runs(renoise[0].tolist())], device=renoise.device)  # (1, C)
    batch = CanvasBatch(ids=torch.where(held, canvas.ids, 0), held=held, hole=hole, widths=[canvas.width])
    step_fn = make_step_fn(infiller, state, canvas.width, renoise)
    gens = make_generators([settings.seed], canvas.ids.device)
    free = set(p for p, on in enumerate(renoise[0].tolist()) if on)

    def blame_free(row_ids: torch.Tensor) -> tuple[int, list[int]]:
        found, positions = blamed_positions(tx, judge, canvas, row_ids.tolist())
        return found, [p for p in positions if p in free]

    events = _events(tx, canvas, free, on_step) if on_step is not None else None
    if settings.sampler == "reference":
        return reference_denoise(
            step_fn,
            batch,
            ReferenceParams.from_settings(settings),
            infiller.noise.for_reference(),
            gens,
            on_step=events,
            cancelled=cancelled,
            correct=(lambda _row, ids: blame_free(ids)) if judge is not None else None,
            max_corrections=settings.repair_rounds,
            sc_dtype=infiller.loaded.dtype,
        )
    errors = [0]

    def repair(_row: int, ids: torch.Tensor) -> list[int]:
        found, positions = blame_free(ids)
        errors[0] += found if positions else 0
        return positions

    out = denoise(
        step_fn,
        batch,
        settings,
        infiller.noise,
        gens,
        on_step=events,
        cancelled=cancelled,
        repair=repair if judge is not None else None,
    )
    out.errors_found = errors
    return out
