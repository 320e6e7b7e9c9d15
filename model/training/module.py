"""Our own compact PyTorch copy of the DiffusionGemma text stack, for training.

It computes exactly what `transformers`' `DiffusionGemmaForBlockDiffusion` computes for the text
model (checked by tests/test_train_equivalence.py), with parameter names that mirror the HF decoder so
`export.py` is a rename. Why not train the HF classes: they run ~100K tokens/s on an H100 against
~0.8-1.35M for a plain module of the same size (data-dependent expert loops, Python mask building,
a DynamicCache per step). Here everything has static shapes, masks are built from two small integer
tensors with `arange` comparisons, experts are computed densely, so `torch.compile` takes the whole step.

One weight stack, two passes (as in HF):
  encode(prefix)  causal over `<bos> + prefix`, returns hidden states and every layer's K/V.
  decode(canvas)  bidirectional over the canvas, reading the prefix K/V (read-only).
What the HF decoder sees through a `DynamicCache(config=...)`: full-attention layers read the whole
prefix; sliding-window layers read only the last `sliding_window - 1` prefix positions (that is all the
cache keeps for them) and the whole canvas, however long, with no window inside the canvas.

Training layout extras (see `encode`/`decode`): rows are left-padded to a fixed prefix length (`start`:
index of the row's `<bos>`) and may use only the first `canvas_len` canvas columns; masks hide the
padding, and since RoPE is relative a row computes what it would alone, unpadded (tested).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import FULL, SLIDING, diffusion_gemma_config


@dataclass
class ModelConfig:
    vocab_size: int = 12288
    hidden_size: int = 512
    intermediate_size: int = 1536  # the dense MLP of every layer (and the self-conditioning MLP)
    num_layers: int = 8
    num_heads: int = 8
    num_kv_heads: int = 4  # sliding layers
    head_dim: int = 64  # sliding layers
    global_head_dim: int = 64  # full layers (HF defaults this to 512: always set it)
    num_global_kv_heads: int = 2  # full layers; must divide num_heads
    sliding_window: int = 512
    layer_types: list[str] = field(default_factory=list)  # empty: 3 sliding : 1 full, last full
    num_experts: int = 2  # every HF layer has a router + experts beside the dense MLP
    top_k_experts: int = 1
    moe_intermediate_size: int = 512
    rms_norm_eps: float = 1e-6
    rope_theta_sliding: float = 10_000.0
    rope_theta_full: float = 1_000_000.0
    full_partial_rotary_factor: float = 0.25  # "proportional" RoPE: only a quarter of a full head rotates
    final_logit_softcapping: float = 30.0
    max_position_embeddings: int = 8192
    canvas_length: int = 256
    initializer_range: float = 0.02

    def __post_init__(self):
        if not self.layer_types:
            self.layer_types = [FULL if (i + 1) % 4 == 0 else SLIDING for i in range(self.num_layers)]
            self.layer_types[-1] = FULL
        self.layer_types = list(self.layer_types)
        problems = []
        if len(self.layer_types) != self.num_layers:
            problems.append(f"layer_types has {len(self.layer_types)} entries for {self.num_layers} layers")
        if self.layer_types[-1] != FULL:
            problems.append("the last layer must be full attention (HF forces it)")
        if set(self.layer_types) - {SLIDING, FULL}:
            problems.append(f"unknown layer types {set(self.layer_types) - {SLIDING, FULL}}")
        for n, kv in (("num_kv_heads", self.num_kv_heads), ("num_global_kv_heads", self.num_global_kv_heads)):
            if self.num_heads % kv:
                problems.append(f"{n}={kv} must divide num_heads={self.num_heads}")
        if not 1 <= self.top_k_experts <= self.num_experts:
            problems.append("top_k_experts must be in 1..num_experts")
        if self.canvas_length % 8:
            problems.append("canvas_length must be a multiple of 8")
        if problems:
            raise ValueError("bad ModelConfig: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)

    # ---- transformers config ------------------------------------------------------------

    def to_hf_config(self):
        """The `DiffusionGemmaConfig` of this shape (built by canvas_ls.model.checkpoint)."""
        return diffusion_gemma_config(**self.to_dict())

    @classmethod
    def from_hf_config(cls, cfg) -> "ModelConfig":
        t = cfg.text_config
        full_idx = t.layer_types.index(FULL)
        slide_idx = t.layer_types.index(SLIDING) if SLIDING in t.layer_types else full_idx
        rp = t.rope_parameters
        return cls(
            vocab_size=t.vocab_size,
            hidden_size=t.hidden_size,
            intermediate_size=t.intermediate_size,
            num_layers=t.num_hidden_layers,
            num_heads=t.num_attention_heads,
            num_kv_heads=t.per_layer_config[slide_idx].num_key_value_heads,  # per-layer attributes in HF
            head_dim=t.per_layer_config[slide_idx].head_dim,
            global_head_dim=t.per_layer_config[full_idx].head_dim,
            num_global_kv_heads=t.per_layer_config[full_idx].num_key_value_heads,
            sliding_window=t.sliding_window,
            layer_types=list(t.layer_types),
            num_experts=t.num_experts,
            top_k_experts=t.top_k_experts,
            moe_intermediate_size=t.moe_intermediate_size,
            rms_norm_eps=t.rms_norm_eps,
            rope_theta_sliding=rp[SLIDING]["rope_theta"],
            rope_theta_full=rp[FULL]["rope_theta"],
            full_partial_rotary_factor=rp[FULL].get("partial_rotary_factor", 1.0),
            final_logit_softcapping=t.final_logit_softcapping,
            max_position_embeddings=t.max_position_embeddings,
            canvas_length=cfg.canvas_length,
            initializer_range=t.initializer_range,
        )


# Presets. Odd values carry a comment. Embedding bytes in bf16 (vocab x hidden x 2) must stay under the
# 15 MB shard limit of an export: a single tensor cannot be split across safetensors shards.

# the GPU default: ~44M parameters, 8 x 512, the calibration size (12288 x 512 bf16 = 12.6 MB embedding)
_SMALL = dict(
    vocab_size=12288,
    hidden_size=512,
    intermediate_size=1536,
    num_layers=8,
    num_heads=8,
    num_kv_heads=4,
    head_dim=64,
    global_head_dim=64,
    num_global_kv_heads=2,
    sliding_window=512,
    num_experts=2,
    top_k_experts=1,
    moe_intermediate_size=512,
    canvas_length=256,
)

PRESETS: dict[str, dict] = {
    # unit tests: every code path (2 experts, sliding + full, different head dims), ~0.2M parameters
    "tiny": dict(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        global_head_dim=32,
        num_global_kv_heads=1,
        sliding_window=32,
        layer_types=[SLIDING, FULL],
        num_experts=2,
        top_k_experts=1,
        moe_intermediate_size=64,
        canvas_length=64,
    ),
    # a CPU toy that learns something in minutes
    "toy": dict(
        vocab_size=4096,
        hidden_size=128,
        intermediate_size=384,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        head_dim=32,
        global_head_dim=32,
        num_global_kv_heads=1,
        sliding_window=128,
        num_experts=2,
        top_k_experts=1,
        moe_intermediate_size=128,
        canvas_length=64,
    ),
    "small": _SMALL,
    # the bundled default (issue 12): "small" at 6 layers with narrower MLPs, 28.7M parameters, 57 MB in
    # bf16. Why: (1) a GPU command returns at most 64 MiB, so "small"'s 92 MB export cannot come back;
    # (2) ~6 minutes on one H200 is ~1.2e17 FLOPs, whose compute-optimal size (Chinchilla, ~20 tokens
    # per parameter) is ~30M parameters, so "small" would be undertrained; (3) a CPU step streams every
    # weight once (issue 13), so 40% fewer bytes is a faster fill.
    "compact": {**_SMALL, "num_layers": 6, "intermediate_size": 1024, "moe_intermediate_size": 384},
    # "small" with one expert: the MoE branch becomes a second gated MLP (no routing waste in the dense
    # expert computation); same HF class, same loading path
    "small-e1": {**_SMALL, "num_experts": 1, "moe_intermediate_size": 768},
    # deeper/wider, ~85M parameters; vocab 9728 keeps 640 x 9728 x 2 bytes = 12.5 MB
    "medium": dict(
        vocab_size=9728,
        hidden_size=640,
        intermediate_size=1920,
        num_layers=12,
        num_heads=10,
        num_kv_heads=5,
        head_dim=64,
        global_head_dim=64,
        num_global_kv_heads=1,
        sliding_window=512,
        num_experts=2,
        top_k_experts=1,
        moe_intermediate_size=640,
        canvas_length=256,
    ),
}


def preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown config {name!r}; choose from {sorted(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})


# ---- building blocks (each mirrors the HF module of the same name) ----------------------------


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """DiffusionGemmaRMSNorm: fp32 math, torch.pow(ms + eps, -0.5), scale by `weight` (not 1 + weight)."""
    xf = x.float()
    out = xf * torch.pow(xf.pow(2).mean(-1, keepdim=True) + eps, -0.5)
    if weight is not None:
        out = out * weight.float()
    return out.type_as(x)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, with_scale: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if with_scale else None

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


def _linear(i: int, o: int) -> nn.Linear:
    return nn.Linear(i, o, bias=False)


class GatedMLP(nn.Module):
    """DiffusionGemmaText4MLP: down(gelu_tanh(gate(x)) * up(x))."""

    def __init__(self, hidden: int, inter: int):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = (
            _linear(hidden, inter),
            _linear(hidden, inter),
            _linear(inter, hidden),
        )

    def forward(self, x):
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_inv_freq(cfg: ModelConfig, layer_type: str) -> torch.Tensor:
    """As HF: "default" RoPE over the whole head for sliding layers; "proportional" for full layers
    (the first partial*head/2 frequencies rotate with exponent over the *whole* head dim, the rest are 0)."""
    if layer_type == SLIDING:
        d = cfg.head_dim
        return 1.0 / (cfg.rope_theta_sliding ** (torch.arange(0, d, 2, dtype=torch.float) / d))
    d = cfg.global_head_dim
    angles = int(cfg.full_partial_rotary_factor * d // 2)
    rot = 1.0 / (cfg.rope_theta_full ** (torch.arange(0, 2 * angles, 2, dtype=torch.float) / d))
    return torch.cat([rot, torch.zeros(d // 2 - angles)])


class Attention(nn.Module):
    """DiffusionGemma{Encoder,Decoder}TextAttention: q/k RMSNorm (scaled), v RMSNorm (unscaled), RoPE,
    softmax scale 1.0. Full layers have no v_proj: values are the raw k_proj output, normed."""

    def __init__(self, cfg: ModelConfig, sliding: bool):
        super().__init__()
        self.sliding = sliding
        self.head_dim = cfg.head_dim if sliding else cfg.global_head_dim
        self.n_heads = cfg.num_heads
        self.n_kv = cfg.num_kv_heads if sliding else cfg.num_global_kv_heads
        self.eps = cfg.rms_norm_eps
        self.q_proj = _linear(cfg.hidden_size, self.n_heads * self.head_dim)
        self.k_proj = _linear(cfg.hidden_size, self.n_kv * self.head_dim)
        self.v_proj = _linear(cfg.hidden_size, self.n_kv * self.head_dim) if sliding else None
        self.o_proj = _linear(self.n_heads * self.head_dim, cfg.hidden_size)
        self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, mask, past: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x (B, L, D); cos/sin (L, hd); mask bool broadcastable to (B, 1, L, K) or None for causal
        self-attention; past: (k, v) each (B, kv, Lp, hd) read before this block's own keys.
        Returns (out (B, L, D), (k, v) of this block (B, kv, L, hd))."""
        B, L, _ = x.shape
        q = self.q_proj(x).view(B, L, self.n_heads, self.head_dim)
        k_raw = self.k_proj(x).view(B, L, self.n_kv, self.head_dim)
        v = self.v_proj(x).view(B, L, self.n_kv, self.head_dim) if self.v_proj is not None else k_raw
        q = self.q_norm(q).transpose(1, 2)  # (B, H, L, hd)
        k = self.k_norm(k_raw).transpose(1, 2)  # (B, kv, L, hd)
        v = rms_norm(v, None, self.eps).transpose(1, 2)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        kv = (k, v)
        if past is not None:
            k = torch.cat([past[0].to(k.dtype), k], dim=2)
            v = torch.cat([past[1].to(v.dtype), v], dim=2)
        if self.n_kv != self.n_heads:  # GQA: expand kv heads (works with every SDPA backend and mask)
            rep = self.n_heads // self.n_kv
            k = (
                k[:, :, None]
                .expand(B, self.n_kv, rep, k.shape[2], self.head_dim)
                .reshape(B, self.n_heads, -1, self.head_dim)
            )
            v = (
                v[:, :, None]
                .expand(B, self.n_kv, rep, v.shape[2], self.head_dim)
                .reshape(B, self.n_heads, -1, self.head_dim)
            )
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None and past is None, scale=1.0
        )
        out = out.transpose(1, 2).reshape(B, L, self.n_heads * self.head_dim)
        return self.o_proj(out), kv


class Router(nn.Module):
    """DiffusionGemmaTextRouter: unscaled RMSNorm, * scale * hidden^-0.5, softmax (fp32), top-k,
    renormalise, * per_expert_scale[chosen]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.eps, self.top_k, self.root = cfg.rms_norm_eps, cfg.top_k_experts, cfg.hidden_size**-0.5
        self.proj = _linear(cfg.hidden_size, cfg.num_experts)
        self.scale = nn.Parameter(torch.ones(cfg.hidden_size))
        self.per_expert_scale = nn.Parameter(torch.ones(cfg.num_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, D) -> dense combine weights (N, E), fp32, zero for experts not chosen."""
        h = rms_norm(x, None, self.eps) * self.scale * self.root
        probs = F.softmax(self.proj(h), dim=-1, dtype=torch.float32)  # (N, E)
        top_w, top_i = torch.topk(probs, k=self.top_k, dim=-1)
        top_w = top_w / top_w.sum(dim=-1, keepdim=True)
        top_w = top_w * self.per_expert_scale[top_i]
        return torch.zeros_like(probs).scatter(1, top_i, top_w)


class Experts(nn.Module):
    """DiffusionGemmaTextExperts weights (E, 2F, D) and (E, D, F), computed densely for every expert:
    static shapes for torch.compile; costs num_experts x the expert FFN, fine for the 1-2 experts we use."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        E, D, Fi = cfg.num_experts, cfg.hidden_size, cfg.moe_intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(E, 2 * Fi, D))
        self.down_proj = nn.Parameter(torch.empty(E, D, Fi))

    def forward(self, x: torch.Tensor, combine: torch.Tensor) -> torch.Tensor:
        """x (N, D), combine (N, E) -> (N, D)."""
        gu = torch.einsum("nd,efd->nef", x, self.gate_up_proj)  # (N, E, 2F)
        gate, up = gu.chunk(2, dim=-1)
        h = F.gelu(gate, approximate="tanh") * up
        out = torch.einsum("nef,edf->ned", h, self.down_proj)  # (N, E, D)
        return (
            (out * combine[..., None].to(out.dtype)).sum(1) if out.shape[1] > 1 else out[:, 0] * combine.to(out.dtype)
        )


class Layer(nn.Module):
    """DiffusionGemma{Encoder,Decoder}TextLayer: attention, then dense MLP + MoE side by side."""

    def __init__(self, cfg: ModelConfig, layer_type: str):
        super().__init__()
        eps, D = cfg.rms_norm_eps, cfg.hidden_size
        self.self_attn = Attention(cfg, sliding=layer_type == SLIDING)
        self.mlp = GatedMLP(D, cfg.intermediate_size)
        self.input_layernorm = RMSNorm(D, eps)
        self.post_attention_layernorm = RMSNorm(D, eps)
        self.pre_feedforward_layernorm = RMSNorm(D, eps)
        self.post_feedforward_layernorm = RMSNorm(D, eps)
        self.router = Router(cfg)
        self.experts = Experts(cfg)
        self.post_feedforward_layernorm_1 = RMSNorm(D, eps)
        self.post_feedforward_layernorm_2 = RMSNorm(D, eps)
        self.pre_feedforward_layernorm_2 = RMSNorm(D, eps)
        self.register_buffer("layer_scalar", torch.ones(1))  # a buffer in HF too (saved, never trained)

    def forward(self, x, cos, sin, mask, past=None):
        h, kv = self.self_attn(self.input_layernorm(x), cos, sin, mask, past)
        x = x + self.post_attention_layernorm(h)
        h1 = self.post_feedforward_layernorm_1(self.mlp(self.pre_feedforward_layernorm(x)))
        flat = x.reshape(-1, x.shape[-1])  # routing reads the residual stream itself, un-normed
        h2 = self.experts(self.pre_feedforward_layernorm_2(flat), self.router(flat)).reshape(x.shape)
        h2 = self.post_feedforward_layernorm_2(h2)
        x = x + self.post_feedforward_layernorm(h1 + h2)
        return x * self.layer_scalar, kv


class SelfConditioning(nn.Module):
    """DiffusionGemmaSelfConditioning: post_norm(embeds + MLP(pre_norm(soft embeddings)))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D, eps = cfg.hidden_size, cfg.rms_norm_eps
        self.pre_norm = RMSNorm(D, eps)
        self.post_norm = RMSNorm(D, eps, with_scale=False)
        self.gate_proj, self.up_proj, self.down_proj = (
            _linear(D, cfg.intermediate_size),
            _linear(D, cfg.intermediate_size),
            _linear(cfg.intermediate_size, D),
        )

    def forward(self, embeds: torch.Tensor, soft: torch.Tensor | None) -> torch.Tensor:
        if soft is not None:  # with zeros the MLP gives exactly 0 (no biases, gelu(0) = 0): skip it
            n = self.pre_norm(soft)
            embeds = embeds + self.down_proj(F.gelu(self.gate_proj(n), approximate="tanh") * self.up_proj(n))
        return self.post_norm(embeds)


# ---- the model ---------------------------------------------------------------------------------


class CanvasLM(nn.Module):
    def __init__(self, cfg: ModelConfig, device: str | torch.device | None = None):
        super().__init__()
        self.cfg = cfg
        with torch.device(device) if device is not None else nullcontext():
            self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)  # tied with the LM head
            self.layers = nn.ModuleList([Layer(cfg, t) for t in cfg.layer_types])
            self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
            self.self_conditioning = SelfConditioning(cfg)
        self.embed_scale = cfg.hidden_size**0.5
        self.register_buffer("inv_freq_sliding", rope_inv_freq(cfg, SLIDING).to(device), persistent=False)
        self.register_buffer("inv_freq_full", rope_inv_freq(cfg, FULL).to(device), persistent=False)
        if device is None or torch.device(device).type != "meta":
            self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """HF's _init_weights: normal(0, 0.02) for linears, embeddings and experts; norms and scales 1."""
        std = self.cfg.initializer_range
        for p in self.parameters():
            if p.ndim >= 2:
                nn.init.normal_(p, 0.0, std)
            else:
                nn.init.ones_(p)

    # ---- pieces -------------------------------------------------------------------------

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(ids) * self.embed_scale

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Tied LM head + soft-capping, fp32 out, as DiffusionGemmaForBlockDiffusion.forward."""
        cap = self.cfg.final_logit_softcapping
        logits = F.linear(h, self.embed_tokens.weight).float()
        return torch.tanh(logits / cap) * cap

    def soft_embeddings(self, sc_logits: torch.Tensor) -> torch.Tensor:
        """Self-conditioning input from logits (B, C, V): softmax-weighted embedding rows * scale."""
        w = self.embed_tokens.weight
        return torch.matmul(sc_logits.softmax(dim=-1, dtype=torch.float32).to(w.dtype), w) * self.embed_scale

    def rope(self, positions: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """positions (L,) -> per layer type (cos, sin), each (L, head_dim), fp32."""
        out = {}
        for t, inv in ((SLIDING, self.inv_freq_sliding), (FULL, self.inv_freq_full)):
            freqs = positions.float()[:, None] * inv[None, :]
            emb = torch.cat([freqs, freqs], dim=-1)
            out[t] = (emb.cos(), emb.sin())
        return out

    # ---- masks --------------------------------------------------------------------------

    def encoder_masks(self, P: int, start: torch.Tensor | None, device) -> dict[str, torch.Tensor | None]:
        """Bool masks (B|1, 1, P, P), True = attend. Causal; sliding layers see the last `window`
        positions including their own (HF: kv > q - window); keys before a row's `start` (left padding)
        are hidden, except that a padding row sees itself so no softmax row is empty."""
        W = self.cfg.sliding_window
        q = torch.arange(P, device=device)[:, None]
        k = torch.arange(P, device=device)[None, :]
        causal = k <= q
        in_window = (q - k) < W
        if start is None:
            return {FULL: None, SLIDING: None if P <= W else (causal & in_window)[None, None]}
        visible = (k[None] >= start[:, None, None]) | (k == q)[None]  # (B, P, P)
        full = causal[None] & visible
        return {FULL: full[:, None], SLIDING: (full & in_window[None])[:, None]}

    def decoder_masks(self, P: int, C: int, start: torch.Tensor | None, canvas_len: torch.Tensor | None, device):
        """Bool key masks (B|1, 1, 1, keys) over [prefix keys ; canvas keys] per layer type, or None.
        Sliding layers get only the last window-1 prefix keys (`decode` slices them the same way)."""
        keep = self.sliding_keep(P)
        if start is None and canvas_len is None:
            return {FULL: None, SLIDING: None}
        B = (start if start is not None else canvas_len).shape[0]
        kp = torch.arange(P, device=device)[None, :]
        pre = kp >= start[:, None] if start is not None else torch.ones(B, P, dtype=torch.bool, device=device)
        kc = torch.arange(C, device=device)[None, :]
        can = kc < canvas_len[:, None] if canvas_len is not None else torch.ones(B, C, dtype=torch.bool, device=device)
        full = torch.cat([pre, can], dim=1)[:, None, None, :]
        sliding = torch.cat([pre[:, P - keep :], can], dim=1)[:, None, None, :]
        return {FULL: full, SLIDING: sliding}

    def sliding_keep(self, P: int) -> int:
        """Prefix positions a sliding layer of the decoder reads: HF's DynamicSlidingWindowLayer keeps window-1."""
        return min(P, self.cfg.sliding_window - 1)

    # ---- the two passes ----------------------------------------------------------------

    def encode(self, ids: torch.Tensor, start: torch.Tensor | None = None):
        """ids (B, P) = [<pad>*start, <bos>, prefix...]; start (B,) or None (no padding).
        Returns (hidden after the final norm (B, P, D), per-layer (k, v))."""
        B, P = ids.shape
        rope = self.rope(torch.arange(P, device=ids.device))
        masks = self.encoder_masks(P, start, ids.device)
        x = self.embed(ids)
        kvs = []
        for layer, t in zip(self.layers, self.cfg.layer_types):
            x, kv = layer(x, *rope[t], masks[t])
            kvs.append(kv)
        return self.norm(x), kvs

    def decode(self, canvas: torch.Tensor, kvs, start=None, canvas_len=None, soft: torch.Tensor | None = None):
        """canvas (B, C) ids; kvs from `encode` over P prefix positions; positions continue at P.
        soft: self-conditioning soft embeddings (B, C, D) or None (= HF with no logits).
        Returns hidden after the final norm (B, C, D)."""
        B, C = canvas.shape
        P = kvs[0][0].shape[2]
        keep = self.sliding_keep(P)
        rope = self.rope(torch.arange(P, P + C, device=canvas.device))
        masks = self.decoder_masks(P, C, start, canvas_len, canvas.device)
        x = self.self_conditioning(self.embed(canvas), soft)
        for layer, t, (k, v) in zip(self.layers, self.cfg.layer_types, kvs):
            if t == SLIDING:
                k, v = k[:, :, P - keep :], v[:, :, P - keep :]
            x, _ = layer(x, *rope[t], masks[t], past=(k, v))
        return self.norm(x)


# ---- the training objective (the batch is built by data.make_batch) ------------------------------


def training_losses(
    model: CanvasLM, batch: dict[str, torch.Tensor], *, ar_weight: float = 0.5, loss_weighting: str = "token"
) -> dict[str, torch.Tensor]:
    """One forward of the objective. Static shapes, no host syncs: torch.compile takes all of it.

    batch (B rows, P prefix, C canvas, K AR samples):
      enc_ids (B, P)       [<pad>*start, <bos>, prefix]
      start (B,)           index of <bos>
      ar_pos, ar_tgt (B, K) sampled prefix positions and their next tokens (-100: ignore)
      canvas (B, C)        the noised canvas (held suffix/pads clean)
      target (B, C)        the clean canvas
      loss_mask (B, C)     noised positions: the diffusion loss is taken there
      region (B, C)        positions that could be noised (hole slots / whole continuation canvas)
      canvas_len (B,)      columns past it are hidden padding
      t (B,)               noise level
      sc (B,)              1.0 where self-conditioning is on for the row, else 0.0
      sc_temp (B,)         temperature applied to the first pass's logits before they condition the second
    """
    enc_h, kvs = model.encode(batch["enc_ids"], batch["start"])

    # Autoregressive loss on a sample of prefix positions: full-vocabulary logits for all P positions
    # would dominate memory; a 25% sample gives the same gradient in expectation.
    D = enc_h.shape[-1]
    ar_h = torch.gather(enc_h, 1, batch["ar_pos"][..., None].expand(-1, -1, D))  # (B, K, D)
    ar_logits = model.logits(ar_h)  # (B, K, V)
    ar_loss = F.cross_entropy(ar_logits.flatten(0, 1), batch["ar_tgt"].flatten(), ignore_index=-100)

    # Self-conditioning: a first pass without gradient; its logits (divided by a per-row temperature,
    # because at inference the sampler feeds back temperature-scaled logits) condition the second pass.
    with torch.no_grad():
        kvs_ng = [(k.detach(), v.detach()) for k, v in kvs]
        first = model.logits(model.decode(batch["canvas"], kvs_ng, batch["start"], batch["canvas_len"]))
        first = first / batch["sc_temp"][:, None, None]
        soft = model.soft_embeddings(first) * batch["sc"][:, None, None].to(first.dtype)
    dec_h = model.decode(batch["canvas"], kvs, batch["start"], batch["canvas_len"], soft=soft.detach())
    logits = model.logits(dec_h)  # (B, C, V) fp32
    ce = F.cross_entropy(logits.flatten(0, 1), batch["target"].flatten(), reduction="none").view(batch["target"].shape)
    m = batch["loss_mask"].to(ce.dtype)
    if loss_weighting == "token":
        # Mean over noised tokens. The optimal denoiser at each noise level is the same whatever
        # per-level weight is used; this one has the lowest variance, and for uniform noise the MDLM
        # 1/t weight is not the ELBO anyway (uniform-state ELBOs weight differently).
        diff_loss = (ce * m).sum() / m.sum().clamp(min=1.0)
    elif loss_weighting == "elbo":
        # MDLM-style: 1/t per row, normalised by the number of positions that could be noised, so
        # E[loss] is the per-token absorbing-noise ELBO bound.
        w = m / batch["t"][:, None]
        diff_loss = (ce * w).sum() / batch["region"].to(ce.dtype).sum().clamp(min=1.0)
    else:
        raise ValueError(f"unknown loss_weighting {loss_weighting!r}")
    loss = diff_loss + ar_weight * ar_loss
    # Token accuracy on noised positions, a readable progress signal.
    acc = ((logits.argmax(-1) == batch["target"]).to(m.dtype) * m).sum() / m.sum().clamp(min=1.0)
    return {"loss": loss, "diff_loss": diff_loss.detach(), "ar_loss": ar_loss.detach(), "diff_acc": acc.detach()}


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices (linears, experts, embedding); not norms and scales."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def count_parameters(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    emb = model.embed_tokens.weight.numel()
    return {"total": total, "embedding": emb, "non_embedding": total - emb}


def flops_per_token(cfg: ModelConfig, P: int, C: int) -> float:
    """Rough training matmul FLOPs per processed token (prefix + canvas), for MFU estimates: 6N for the
    weights (experts computed densely), the LM head on the canvas and on the 25% AR sample, and the
    forward-only self-conditioning pass over the canvas. Attention score FLOPs are left out."""
    m = CanvasLM(cfg, device="meta")
    n = sum(p.numel() for p in m.parameters()) - m.embed_tokens.weight.numel()
    head = cfg.vocab_size * cfg.hidden_size
    per_token = 6.0 * n + 6.0 * head * (C + 0.25 * P) / (P + C)
    return per_token + 2.0 * (n + head) * C / (P + C)


__all__ = ["ModelConfig", "CanvasLM", "PRESETS", "preset", "training_losses", "param_groups", "SLIDING", "FULL"]
