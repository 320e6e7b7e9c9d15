"""Our training module computes what transformers' DiffusionGemmaForBlockDiffusion computes, on the same weights.

Covers: encoder AR logits, decoder canvas logits without and with self-conditioning, prefixes shorter and
longer than the sliding window (prefix + canvas always longer than it), and the training layout (left-padded
prefix, right-masked canvas) against HF on the unpadded row.
"""

from __future__ import annotations

import pytest
import torch

from canvas_ls.model.training.export import build_hf_model, from_hf_state_dict, to_hf_state_dict
from canvas_ls.model.training.module import CanvasLM, preset

ATOL = 1e-4


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    cfg = preset("tiny")  # sliding window 32, 2 experts top-1, full-layer head dim 32 != sliding 16
    model = CanvasLM(cfg)
    with torch.no_grad():  # move every scale away from 1 so a missed norm or scale shows up
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.normal_(1.0, 0.3)
        for layer in model.layers:
            layer.router.proj.weight.normal_(0.0, 1.0)  # both experts get picked
    model.eval()
    hf = build_hf_model(model)
    return model, hf


def _hf_run(hf, prefix: torch.Tensor, canvas: torch.Tensor, sc_logits=None):
    from transformers import DynamicCache

    cache = DynamicCache(config=hf.config)
    enc = hf.model.encoder(input_ids=prefix, past_key_values=cache, use_cache=True)
    cap = hf.config.text_config.final_logit_softcapping
    ar = torch.tanh(hf.lm_head(enc.last_hidden_state).float() / cap) * cap
    dec = hf(past_key_values=cache, decoder_input_ids=canvas).logits
    dec_sc = (
        hf(past_key_values=cache, decoder_input_ids=canvas, self_conditioning_logits=sc_logits).logits
        if sc_logits is not None
        else None
    )
    return ar, dec, dec_sc


def _ids(g, shape, vocab):
    return torch.randint(4, vocab, shape, generator=g)


@pytest.mark.parametrize("prefix_len,canvas_len", [(20, 16), (50, 24), (31, 40)])
@torch.no_grad()
def test_logits_match_hf(pair, prefix_len, canvas_len):
    model, hf = pair
    V = model.cfg.vocab_size
    assert prefix_len + canvas_len > model.cfg.sliding_window
    g = torch.Generator().manual_seed(prefix_len)
    prefix = _ids(g, (2, prefix_len), V)
    prefix[:, 0] = 2  # <bos>
    canvas = _ids(g, (2, canvas_len), V)
    sc_logits = torch.randn(2, canvas_len, V, generator=g) * 3

    ar_hf, dec_hf, sc_hf = _hf_run(hf, prefix, canvas, sc_logits)
    h, kvs = model.encode(prefix)
    ar = model.logits(h)
    dec = model.logits(model.decode(canvas, kvs))
    sc = model.logits(model.decode(canvas, kvs, soft=model.soft_embeddings(sc_logits)))
    torch.testing.assert_close(ar, ar_hf, atol=ATOL, rtol=0)
    torch.testing.assert_close(dec, dec_hf, atol=ATOL, rtol=0)
    torch.testing.assert_close(sc, sc_hf, atol=ATOL, rtol=0)
    assert (sc - dec).abs().max() > 1e-2  # self-conditioning changes something


@torch.no_grad()
def test_training_layout_matches_unpadded_hf(pair):
    """A left-padded row (start > 0) with a masked canvas tail equals HF on the bare row."""
    model, hf = pair
    V = model.cfg.vocab_size
    g = torch.Generator().manual_seed(7)
    P, C = 50, 24
    rows = [(P, C), (13, 16), (40, 8)]  # (real prefix length incl. <bos>, canvas columns used)
    enc = torch.zeros(len(rows), P, dtype=torch.long)  # <pad> = 0
    canvas = torch.zeros(len(rows), C, dtype=torch.long)
    bare = []
    for r, (n, c) in enumerate(rows):
        pre = _ids(g, (1, n), V)
        pre[0, 0] = 2
        can = _ids(g, (1, c), V)
        enc[r, P - n :] = pre[0]
        canvas[r, :c] = can[0]
        bare.append((pre, can))
    start = torch.tensor([P - n for n, _ in rows])
    clen = torch.tensor([c for _, c in rows])
    sc_logits = torch.randn(len(rows), C, V, generator=g)

    h, kvs = model.encode(enc, start)
    ar = model.logits(h)
    dec = model.logits(model.decode(canvas, kvs, start, clen))
    sc = model.logits(model.decode(canvas, kvs, start, clen, soft=model.soft_embeddings(sc_logits)))
    for r, ((n, c), (pre, can)) in enumerate(zip(rows, bare)):
        ar_hf, dec_hf, sc_hf = _hf_run(hf, pre, can, sc_logits[r : r + 1, :c])
        torch.testing.assert_close(ar[r : r + 1, P - n :], ar_hf, atol=ATOL, rtol=0)
        torch.testing.assert_close(dec[r : r + 1, :c], dec_hf, atol=ATOL, rtol=0)
        torch.testing.assert_close(sc[r : r + 1, :c], sc_hf, atol=ATOL, rtol=0)


def test_state_dict_round_trip(pair):
    model, hf = pair
    sd = model.state_dict()
    back = from_hf_state_dict(to_hf_state_dict(sd))
    assert back.keys() == sd.keys()
    hf_sd = hf.state_dict()
    text_keys = {k for k in hf_sd if ".vision_tower." not in k and ".embed_vision." not in k}
    assert text_keys == set(to_hf_state_dict(sd)), "every HF text weight comes from ours and nothing else"
    mine = from_hf_state_dict(hf_sd)
    for k, v in sd.items():
        torch.testing.assert_close(mine[k], v, atol=0, rtol=0)
