"""The prefix K/V cache: reused, cropped and batched caches give the logits a fresh encode gives."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache

from canvas_ls.model.kv import PrefixEncoder


def _reference(model, ids, canvas):
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model.model.encoder(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True)
        return model(past_key_values=cache, decoder_input_ids=canvas).logits


def _ours(enc, model, states, canvas):
    cache, masks, lengths = enc.decoder_cache(states, canvas.shape[1])
    positions = lengths[:, None] + torch.arange(canvas.shape[1])[None]
    with torch.no_grad():
        return model(
            past_key_values=cache,
            decoder_input_ids=canvas,
            decoder_position_ids=positions,
            decoder_attention_mask=masks,
        ).logits


def test_extend_crop_and_batch_match_a_fresh_encode(tiny):
    model = tiny.model
    assert tiny.model.config.text_config.sliding_window < 150  # the prompts below cross the sliding window
    enc = PrefixEncoder(model)
    g = torch.Generator().manual_seed(1)
    ids = [2] + torch.randint(4, 1000, (150,), generator=g).tolist()
    canvas = torch.randint(0, 1000, (1, 16), generator=g)

    enc.encode(ids[:100], key="d")
    extended = enc.encode(ids, key="d")
    assert enc.last_reused == 64  # whole chunks only
    assert torch.allclose(_ours(enc, model, [extended], canvas), _reference(model, ids, canvas), rtol=1e-4, atol=1e-4)

    edited = ids[:120] + [7, 8, 9]  # the user typed over the end
    cropped = enc.encode(edited, key="d")
    assert enc.last_reused == 64
    assert torch.allclose(_ours(enc, model, [cropped], canvas), _reference(model, edited, canvas), rtol=1e-4, atol=1e-4)

    short = enc.encode(ids[:30])
    other = torch.randint(0, 1000, (1, 16), generator=g)
    both = _ours(enc, model, [cropped, short], torch.cat([canvas, other]))
    assert torch.allclose(both[0], _reference(model, edited, canvas)[0], rtol=1e-4, atol=1e-4)
    assert torch.allclose(both[1], _reference(model, ids[:30], other)[0], rtol=1e-4, atol=1e-4)


def test_a_reused_prompt_is_bitwise_a_fresh_encode(tiny):
    """Reuse must not change a fill: the K/V after any history of edits equal a fresh encode exactly."""
    g = torch.Generator().manual_seed(2)
    ids = [2] + torch.randint(4, 1000, (150,), generator=g).tolist()
    fresh = PrefixEncoder(tiny.model).encode(ids)
    enc = PrefixEncoder(tiny.model)
    for history in (ids[:100], ids + [5, 6, 7], ids[:149] + [9], ids[:20]):  # typed, deleted, typed over
        enc.encode(history, key="d")
        reused = enc.encode(ids, key="d")
        assert enc.last_reused > 0 or len(history) < enc.chunk
        assert reused.ids == ids
        for a, b in zip(fresh.keys + fresh.values, reused.keys + reused.values):
            assert torch.equal(a, b)
