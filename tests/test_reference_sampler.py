"""The reference sampler (model/reference.py) reproduces transformers' DiffusionGemmaForBlockDiffusion.generate()
token for token, on the tiny random-weight checkpoint in float64.

Both sides get the same random draws: torch's global generator is seeded identically before each (the
reference draws from it, ours from a generator seeded the same way), and both run the real model; the
comparison is of their real outputs (generate()'s sequences and tokens per forward pass against ours).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from transformers.models.diffusion_gemma.generation_diffusion_gemma import StableAndConfidentStoppingCriteria

from canvas_ls.model.canvas import CanvasBatch
from canvas_ls.model.infill import Infiller
from canvas_ls.model.kv import PrefixEncoder, cache_arg
from canvas_ls.model.reference import (
    ReferenceParams,
    StableAndConfident,
    accept_entropy_bound,
    draw_rows,
    pad_after_first_end,
    position_statistics,
    reference_denoise,
    vocab_block,
)
from canvas_ls.model.settings import GenerationDefaults, SamplerSettings

PROMPT_TOKENS = 20
SEED = 1234


def _prompts(tiny, batch: int) -> torch.Tensor:
    """`batch` different prompts of PROMPT_TOKENS tokens each (<bos> first): (batch, PROMPT_TOKENS)."""
    text = "def mean(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total / len(xs)\n" * 4
    ids = tiny.tokenizer.encode(text, add_special_tokens=False)
    rows = [[tiny.bos_id] + ids[7 * i : 7 * i + PROMPT_TOKENS - 1] for i in range(batch)]
    return torch.tensor(rows)


def _ours(tiny, prompts: torch.Tensor, settings: SamplerSettings, gens):
    """Our side: prompts encoded by canvas-ls's own prefix encoder, the canvas denoised by reference_denoise."""
    model = tiny.model
    canvas_length = model.config.canvas_length
    encoder = PrefixEncoder(model)
    states = [encoder.encode(row.tolist()) for row in prompts]
    cache, masks, lengths = encoder.decoder_cache(states, canvas_length)
    positions = lengths[:, None] + torch.arange(canvas_length)[None]

    def step_fn(canvas, sc_logits):
        return model(
            **cache_arg(model, cache),
            decoder_input_ids=canvas,
            self_conditioning_logits=sc_logits,
            decoder_position_ids=positions,
            decoder_attention_mask=masks,
        ).logits

    noise = replace(Infiller(tiny).noise, banned_ids=())  # generate() bans nothing
    n = prompts.shape[0]
    batch = CanvasBatch(
        ids=torch.zeros(n, canvas_length, dtype=torch.long),
        held=torch.zeros(n, canvas_length, dtype=torch.bool),
        hole=torch.zeros(n, canvas_length, dtype=torch.long),
    )
    params = ReferenceParams.from_settings(settings.resolved(tiny.generation))
    out = reference_denoise(step_fn, batch, params, noise, gens, sc_dtype=model.model.decoder.embed_tokens.weight.dtype)
    ids = pad_after_first_end(out.ids, (tiny.eos_id,), tiny.pad_id)
    per_pass = (ids != tiny.pad_id).sum(-1) / torch.tensor(out.steps)
    return ids, per_pass, out


def _generate(tiny, prompts: torch.Tensor, settings: SamplerSettings, monkeypatch):
    """transformers' side: generate() with the checkpoint's generation config, the same overrides."""
    model = tiny.model
    s = settings.resolved(tiny.generation)
    kwargs = {
        "max_denoising_steps": s.max_steps,
        "stability_threshold": s.stability_threshold,
        "confidence_threshold": float(s.stop_entropy),
    }
    with monkeypatch.context() as m:
        if not s.early_stop:  # generate() without StableAndConfidentStoppingCriteria: every step runs
            m.setattr(model, "_prepare_diffusion_stopping_criteria", lambda generation_config: None)
        torch.manual_seed(SEED)
        out = model.generate(prompts, **kwargs)
    return out.sequences[:, prompts.shape[1] :], out.tokens_per_forward


def _global_generator():
    torch.manual_seed(SEED)
    return None  # reference_denoise draws from torch's global generator


def test_the_checkpoint_supplies_the_defaults(tiny64):
    """generation_config.json is read into the LoadedModel; settings override it."""
    assert tiny64.generation == GenerationDefaults(
        max_steps=48, entropy_bound=0.1, t_min=0.4, t_max=0.8, stability_threshold=1, confidence_threshold=0.005
    )
    assert tiny64.model.generation_config.max_denoising_steps == 48  # transformers reads the same file
    s = SamplerSettings().resolved(tiny64.generation, tiny64.default_sampler)
    assert (
        s.sampler,
        s.max_steps,
        s.entropy_bound,
        s.temperature_start,
        s.temperature_end,
        s.stability_threshold,
        s.stop_entropy,
    ) == ("reference", 48, 0.1, 0.8, 0.4, 1, 0.005)
    s = SamplerSettings(max_steps=8, stop_entropy=0.5, sampler="commit").resolved(tiny64.generation, "reference")
    assert (s.sampler, s.max_steps, s.stop_entropy, s.temperature_start) == ("commit", 8, 0.5, 0.8)
    assert SamplerSettings(sampler="commit").resolved(tiny64.generation).max_steps == 16  # the commit loop's budget


# Early stop on: the published thresholds never stop a random-weight canvas (its mean entropy stays near
# 1 nat), so "on" uses a threshold it meets (`_stop_entropy`): rows stop at different steps, and a
# stopped row is frozen while its batch-mates go on. (An argmax canvas of random weights never
# repeats, so stability 0.)
EARLY_STOP = SamplerSettings(max_steps=16, stability_threshold=0, stop_entropy=1.12)
NO_EARLY_STOP = SamplerSettings(max_steps=16, early_stop=False)


def _stop_entropy(tiny, prompts: torch.Tensor, settings: SamplerSettings, monkeypatch) -> float:
    """A stop entropy these prompts' rows cross before the last step, each at a step of its own when
    there are several: read off the rows' mean entropies in a run that never stops, as the midpoint of
    the widest gap between them that gives such steps. Which tokens a row samples follows the CPU's
    rounding (MKL's AVX-512 and AVX2 float64 kernels differ in the last bits, enough to flip a draw), so
    the entropies, and a fixed threshold's verdict, differ between machines: a fixed 1.12 stopped the 3
    rows at different steps on one machine and at the same step on another, idle or busy alike."""
    means: list[list[float]] = []
    real = StableAndConfident.__call__

    def recording(self, argmax, entropy, free):
        mean = entropy.mean(-1) if free is None else torch.where(free, entropy, 0).sum(-1) / free.sum(-1).clamp(min=1)
        means.append(mean.tolist())
        return real(self, argmax, entropy, free)

    with monkeypatch.context() as m:
        m.setattr(StableAndConfident, "__call__", recording)
        _ours(tiny, prompts, replace(settings, stop_entropy=1e-9), _global_generator())
    before_last = means[: settings.max_steps - 1]
    values = sorted({v for step in before_last for v in step})
    best, widest = None, -1.0
    for lo, hi in zip(values, values[1:]):
        bound = (lo + hi) / 2
        stops = [next((k for k, step in enumerate(before_last) if step[r] < bound), None) for r in range(len(prompts))]
        if None in stops or (len(prompts) > 1 and len(set(stops)) == 1):
            continue
        if hi - lo > widest:
            best, widest = bound, hi - lo
    assert best is not None, f"no stop entropy stops these rows apart: {means}"
    return best


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("settings", [EARLY_STOP, NO_EARLY_STOP], ids=["early-stop", "no-early-stop"])
def test_reference_sampler_reproduces_generate_token_for_token(tiny64, monkeypatch, batch, settings):
    prompts = _prompts(tiny64, batch)
    if settings.early_stop:
        settings = replace(settings, stop_entropy=_stop_entropy(tiny64, prompts, settings, monkeypatch))
    theirs, their_per_pass = _generate(tiny64, prompts, settings, monkeypatch)
    ours, our_per_pass, out = _ours(tiny64, prompts, settings, _global_generator())
    assert ours.tolist() == theirs.tolist()
    assert our_per_pass.tolist() == their_per_pass.tolist()  # the same steps per row
    if settings.early_stop:
        assert all(out.stopped_early) and max(out.steps) < settings.max_steps
        if batch == 3:
            assert len(set(out.steps)) > 1, "rows should stop at different steps"
    else:
        assert out.steps == [settings.max_steps] * batch and not any(out.stopped_early)


def test_checkpoint_defaults_and_a_per_row_generator_match_generate(tiny64, monkeypatch):
    """The checkpoint's own settings (48 steps, published stopping thresholds), and our per-row random
    streams (what the Infiller uses), which for one row draw exactly what the global generator draws."""
    prompts = _prompts(tiny64, 1)
    settings = SamplerSettings()
    theirs, their_per_pass = _generate(tiny64, prompts, settings, monkeypatch)
    ours, our_per_pass, out = _ours(tiny64, prompts, settings, [torch.Generator().manual_seed(SEED)])
    assert ours.tolist() == theirs.tolist()
    assert our_per_pass.tolist() == their_per_pass.tolist()
    assert out.steps == [48]


def test_stopping_criterion_matches_transformers_when_the_argmax_is_stable():
    """Stability needs a repeating argmax, which random weights never give: check the criterion on its own."""
    torch.manual_seed(0)
    theirs = StableAndConfidentStoppingCriteria(stability_threshold=2, confidence_threshold=0.3)
    ours = StableAndConfident(stability_threshold=2, stop_entropy=0.3)
    canvases = [torch.randint(0, 5, (3, 6)) for _ in range(2)]
    sequence = [canvases[0], canvases[1], canvases[1], canvases[1], canvases[0], canvases[0], canvases[0]]
    fired = []
    for step, argmax in enumerate(sequence):
        logits = torch.randn(3, 6, 5) * (1 + 4 * step)  # sharper every step: the mean entropy falls
        entropy = torch.distributions.Categorical(logits=logits).entropy()
        a, b = theirs(argmax, logits), ours(argmax, entropy, None)
        assert a.tolist() == b.tolist()
        fired.append(a.any().item())
    assert any(fired) and not all(fired)


def test_entropy_bound_acceptance_matches_transformers_and_skips_ineligible_positions():
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
        EntropyBoundSampler,
        EntropyBoundSamplerConfig,
    )

    torch.manual_seed(0)
    logits = torch.randn(2, 16, 50) * 3
    sampler = EntropyBoundSampler(
        EntropyBoundSamplerConfig(entropy_bound=0.5), canvas_length=16, vocab_size=50, max_denoising_steps=4
    )
    sampler.accept_canvas(torch.zeros(2, 16, dtype=torch.long), torch.ones(2, 16, dtype=torch.long), logits, 1)
    entropy = torch.distributions.Categorical(logits=logits).entropy()
    all_positions = torch.ones(2, 16, dtype=torch.bool)
    assert accept_entropy_bound(entropy, None, 0.5).tolist() == sampler.accepted_token_mask.tolist()
    assert accept_entropy_bound(entropy, all_positions, 0.5).tolist() == sampler.accepted_token_mask.tolist()
    eligible = all_positions.clone()
    eligible[:, ::2] = False
    got = accept_entropy_bound(entropy, eligible, 0.5)
    assert not got[~eligible].any() and got.any(dim=-1).all()


def test_pad_after_first_end_keeps_the_end_token():
    ids = torch.tensor([[5, 1, 7, 1, 9], [5, 6, 7, 8, 9]])
    assert pad_after_first_end(ids, (1,), 0).tolist() == [[5, 1, 0, 0, 0], [5, 6, 7, 8, 9]]


@pytest.mark.parametrize("vocab", [512, 300])  # blocks of 128 ids, and a vocabulary no block size divides
def test_fast_draws_sample_the_softmax_and_never_a_banned_id(vocab):
    """draw_rows (two-level inverse CDF over position_statistics' block mass) draws from softmax(processed):
    over 20,000 positions sharing one distribution the frequencies match it (total variation < 0.05, what
    torch.multinomial gets is ~0.02), a banned id (probability 0) is never drawn, not even beside a block
    boundary where all the mass sits, and held positions and stopped rows draw nothing."""
    assert vocab_block(512) == 128 and vocab_block(300) == 300
    g = torch.Generator().manual_seed(0)
    base = torch.randn(vocab, generator=g) * 2
    banned = torch.zeros(vocab, dtype=torch.bool)
    banned[[0, 1, 127, 128, 129, vocab - 1]] = True
    n = 20_000
    logits = base.expand(1, n, vocab).clone()
    processed, lse, _, _, _, mass = position_statistics(logits, banned, torch.tensor(0.8))
    free = torch.ones(1, n, dtype=torch.bool)
    free[0, :10] = False  # held
    sample = draw_rows(processed, lse, mass, [torch.Generator().manual_seed(1)], [n], [True], free)
    assert (sample[0, :10] == 0).all()
    drawn = sample[0, 10:]
    assert not banned[drawn].any()
    expected = torch.softmax(processed[0, 0], -1)
    seen = torch.bincount(drawn, minlength=vocab).double() / drawn.numel()
    assert 0.5 * (seen - expected.double()).abs().sum() < 0.05

    # All the mass on the id after a banned block edge; an id between two banned ones.
    peaked = torch.full((1, 2, vocab), -30.0)
    peaked[0, 0, 130] = 10.0
    peaked[0, 1, 2] = 10.0
    processed, lse, _, _, _, mass = position_statistics(peaked, banned, torch.tensor(1.0))
    gens = [torch.Generator().manual_seed(s) for s in (2, 3)]
    both = torch.cat([processed, processed]), torch.cat([lse, lse]), torch.cat([mass, mass])
    out = draw_rows(*both, gens, [2, 2], [True, False], None)
    assert out[0].tolist() == [130, 2] and out[1].tolist() == [0, 0]  # the stopped row drew nothing
