"""bf16 products on a CPU with their weights prepacked for oneDNN, once at load: the linear layers,
the mixture-of-experts layers and the self-conditioning product (soft tokens times the embedding).

    n = pack_linears(model)      # after loading; 0 (nothing changed) where it does not apply
    soft = soft_embedding(probs, decoder.embed_tokens)   # probs @ embedding, packed when it was packed

A bf16 product on a CPU reorders its weight into oneDNN's blocked layout on every call; packing it once
(what inductor's `freezing` does) makes the same products faster and bitwise equal
(`tests/test_speed_defaults.py`). Measured on one core of the 2-core machine, a 32-token canvas: the
LM head (12288 x 512) 3.1 -> 2.1 ms, a 1536 x 512 projection 285 -> 239 us, the self-conditioning
product 2.8 -> 1.9 ms. transformers' experts kernel (`grouped_mm`) runs on a CPU as one unpacked matmul
per expert: 7.1 ms of a ~33 ms `small` step (torch.profiler). A compiled `small` step with everything
packed: 35.3 -> 28.2 ms (`benchmarks/latency.py --packed-ab`).

inductor's `freezing` packs too, but its graphs hold the packed (mkldnn) tensors as constants, which
its FX graph cache cannot store: 40-60 s of compiling at every start. Here the packed weights live in
a registry outside the graph and are called through two custom ops, `canvas_ls::packed_linear` and
`canvas_ls::packed_experts` (eager: transformers' gather of each expert's rows, data-dependent shapes),
which torch.compile keeps as opaque calls: the compiled step stays cacheable. The compiled step computes
a layer of a few experts densely instead (`PackedExperts._dense`: each expert's packed products on every
row, the routing as a weight), so inductor fuses everything around the products. Side by side, 25
single-line `small` fills alternated on two threads: 206 -> 195 ms p50 (dense experts), and 243 -> 235
ms (these ops defined with torch.library's low-level API instead of `custom_op`).

The text stack's linear layers are replaced by `PackedLinear` and its experts by `PackedExperts`; both
keep the original weights as their parameters (state_dict, tied embeddings and `.dtype` see what they
saw) beside the packed copies. The embedding keeps only the key of its packed transpose. The copies
cost as much memory again as those weights, so models whose copies would exceed MAX_PACKED_BYTES are
left as they are.
"""

from __future__ import annotations

import itertools
import logging
import weakref

import torch

log = logging.getLogger("canvas_ls.model.packed_linear")

MAX_PACKED_BYTES = 1 << 30  # the packed copies' memory at most (the `small` preset's: ~62 MB)
# Experts computed densely in the compiled step (PackedExperts._dense) when a layer has at most this many
DENSE_EXPERTS = 4
_BATCH_HINT = 32  # rows oneDNN plans the packing for: a single-line canvas (any row count works)

_packed: dict[int, object] = {}  # key -> packed weight(s), dropped when their owner is collected
_keys = itertools.count()


def _pack(weight: torch.Tensor) -> torch.Tensor:
    """A linear layer's (out, in) weight in oneDNN's blocked layout."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), _BATCH_HINT)


def _register(owner: object, packed: object) -> int:
    """Keep `packed` under a new key for as long as `owner` lives; returns the key."""
    key = next(_keys)
    _packed[key] = packed
    weakref.finalize(owner, _packed.pop, key, None)
    return key


def _product(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T (+ bias) with a packed weight."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def _available() -> bool:
    return (
        hasattr(torch, "library")
        and hasattr(torch.library, "register_fake")
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


_lib = None  # the `canvas_ls` operator library, defined on first use


def _library():
    """`canvas_ls::packed_linear` and `canvas_ls::packed_experts`, defined with torch.library's low-level
    API: a call from a compiled graph goes straight from the dispatcher to the function below, ~10 us
    less per call than through `torch.library.custom_op`'s wrappers (~70 calls a `small` step)."""
    global _lib
    if _lib is None:
        lib = torch.library.Library("canvas_ls", "DEF")
        lib.define("packed_linear(Tensor x, int key, int out_features, Tensor? bias) -> Tensor")
        lib.define("packed_experts(Tensor x, Tensor top_k_index, Tensor top_k_weights, int key) -> Tensor")
        lib.impl("packed_linear", lambda x, key, out_features, bias: _product(x, _packed[key], bias), "CPU")
        lib.impl("packed_experts", lambda x, i, w, key: _experts_forward(_packed[key], x, i, w), "CPU")
        torch.library.register_fake("canvas_ls::packed_linear", lib=lib)(
            lambda x, key, out_features, bias: x.new_empty((*x.shape[:-1], out_features))
        )
        torch.library.register_fake("canvas_ls::packed_experts", lib=lib)(lambda x, i, w, key: torch.empty_like(x))
        _lib = lib
    return torch.ops.canvas_ls


def _packed_linear_op():
    return _library().packed_linear.default


def _packed_experts_op():
    return _library().packed_experts.default


def _experts_forward(packed, x, top_k_index, top_k_weights):
    """transformers' grouped_mm experts forward, row for row (the same products on the same rows in the
    same order, so bitwise the same), with each expert's weights packed. x (N, H); top_k_index,
    top_k_weights (N, K). The (token, choice) pairs are sorted by expert once, so each expert's rows are
    one contiguous slice: ~15 small ops a layer instead of ~30 (a `small` layer's 547 -> 382 us on two
    threads, 208 us of it the products)."""
    gate_up, down, act = packed
    n, k = top_k_index.shape
    expert_ids, weights = top_k_index.reshape(-1), top_k_weights.reshape(-1)  # (N*K,)
    order = torch.argsort(expert_ids, stable=True)  # pairs grouped by expert, each group in row order
    counts = torch.bincount(expert_ids, minlength=len(gate_up)).tolist()
    rows = x[order // k]  # (N*K, H)
    outs, start = [], 0
    for e, count in enumerate(counts):
        if count:
            gate, up = _product(rows[start : start + count], gate_up[e]).chunk(2, dim=-1)
            outs.append(_product(act(gate) * up, down[e]))
            start += count
    if not outs:  # no rows
        return torch.zeros_like(x)
    y = (torch.cat(outs) if len(outs) > 1 else outs[0]) * weights[order].unsqueeze(-1)
    pairs = torch.empty_like(y)  # (N*K, H): each pair's weighted expert output, back in pair order
    pairs[order] = y
    return pairs.view(n, k, -1).sum(dim=1).to(x.dtype)


class PackedExperts(torch.nn.Module):
    """transformers' experts module (gate_up_proj (E, 2I, H), down_proj (E, H, I), gated) computing with
    prepacked per-expert weights; keeps the original Parameters (state_dict keys stay)."""

    def __init__(self, experts: torch.nn.Module):
        super().__init__()
        self.gate_up_proj, self.down_proj = experts.gate_up_proj, experts.down_proj
        self.act_fn = experts.act_fn
        self.num_experts = int(experts.num_experts)
        gate_up, down = [_pack(w) for w in self.gate_up_proj], [_pack(w) for w in self.down_proj]
        self.key = _register(self, (gate_up, down, self.act_fn))
        # each expert's products alone, for the compiled step's dense form
        self.gate_up_keys = [_register(self, w) for w in gate_up]
        self.down_keys = [_register(self, w) for w in down]
        self._op = _packed_experts_op()

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor):
        if torch.compiler.is_compiling() and self.num_experts <= DENSE_EXPERTS:
            return self._dense(hidden_states, top_k_index, top_k_weights)
        return self._op(hidden_states, top_k_index, top_k_weights, self.key)

    def _dense(self, x: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        """The compiled step's form: every expert on every row, each row's output weighted by its
        routing weight (0 for an expert it was not routed to). A few experts on a canvas's rows cost
        little more in products than the routed rows alone, and the graph keeps no data-dependent
        shape: inductor fuses the activation and the weighting, where the routed form runs ~15 small
        eager ops a layer (~200 us on two threads). Each row's products are the routed form's
        (oneDNN computes a row alike whatever the rows beside it); the sums round as compiled code does.
        x (N, H); top_k_index, top_k_weights (N, K)."""
        op = _packed_linear_op()
        hidden = self.down_proj.shape[1]
        inter = self.down_proj.shape[2]
        out = None
        for e in range(self.num_experts):
            gate, up = op(x, self.gate_up_keys[e], 2 * inter, None).chunk(2, dim=-1)  # (N, I) each
            y = op(self.act_fn(gate) * up, self.down_keys[e], hidden, None)  # (N, H)
            weight = (top_k_weights * (top_k_index == e)).sum(dim=-1, keepdim=True)  # (N, 1)
            y = y * weight
            out = y if out is None else out + y
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, packed for oneDNN"


def _packable_experts(module: torch.nn.Module) -> bool:
    """transformers' standard experts layout, which PackedExperts reproduces; anything else stays."""
    w = getattr(module, "gate_up_proj", None)
    d = getattr(module, "down_proj", None)
    return (
        isinstance(w, torch.Tensor)
        and isinstance(d, torch.Tensor)
        and w.dim() == 3
        and d.dim() == 3
        and w.dtype == torch.bfloat16
        and w.device.type == "cpu"
        and getattr(module, "has_gate", False)
        and not getattr(module, "has_bias", True)
        and not getattr(module, "is_transposed", True)
        and getattr(module, "is_concatenated", False)
        and not getattr(module, "has_post_expert_norm", True)
        and not getattr(module, "_is_expert_parallel", True)
        and getattr(getattr(module, "config", None), "_experts_implementation", None) in (None, "grouped_mm")
        and hasattr(module, "act_fn")
    )


SOFT_KEY = "canvas_ls_packed_transpose"  # on an embedding module: the key of its packed transpose


def soft_embedding(probs: torch.Tensor, embed: torch.nn.Module) -> torch.Tensor:
    """probs (..., V) @ embed.weight (V, H) -> (..., H): through the packed transpose that pack_linears
    gave the embedding (bitwise the same product), else a plain matmul."""
    key = getattr(embed, SOFT_KEY, None)
    if key is None:
        return torch.matmul(probs, embed.weight)
    return _packed_linear_op()(probs, key, embed.weight.shape[1], None)


class PackedLinear(torch.nn.Module):
    """An `nn.Linear` whose products use a prepacked copy of its weight (see the module docstring)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # the same Parameter: tied weights and state_dict keys stay
        self.bias = linear.bias
        self.key = _register(self, _pack(linear.weight))
        self._op = _packed_linear_op()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._op(x, self.key, self.out_features, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed for oneDNN"


# transformers' gated MLPs whose forward is down_proj(act_fn(gate_proj(x)) * up_proj(x)), which PackedMLP reproduces
GATED_MLPS = ("DiffusionGemmaText4MLP",)


class PackedMLP(torch.nn.Module):
    """A gated MLP, down(act(gate(x)) * up(x)), with gate and up as one packed product of the two weights
    stacked: each output column is computed as the separate products compute it (bitwise, tested), in
    one oneDNN call instead of two (a `small` layer on a 32 canvas, two threads: 302 -> 266 us). Keeps
    the original submodules (state_dict keys stay); down_proj is packed as any linear layer."""

    def __init__(self, mlp: torch.nn.Module):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = mlp.gate_proj, mlp.up_proj, mlp.down_proj
        self.act_fn = mlp.act_fn
        self.intermediate = mlp.gate_proj.out_features
        self.key = _register(self, _pack(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = _packed_linear_op()(x, self.key, 2 * self.intermediate, None).chunk(2, dim=-1)
        return self.down_proj(self.act_fn(gate) * up)

    def extra_repr(self) -> str:
        return "gate and up packed as one product"


def _fusable_mlp(module: torch.nn.Module) -> bool:
    parts = [getattr(module, name, None) for name in ("gate_proj", "up_proj", "down_proj")]
    return (
        type(module).__name__ in GATED_MLPS
        and all(isinstance(p, torch.nn.Linear) and p.bias is None for p in parts)
        and all(p.weight.dtype == torch.bfloat16 and p.weight.device.type == "cpu" for p in parts)
        and parts[0].weight.shape == parts[1].weight.shape
        and hasattr(module, "act_fn")
    )


def _text_modules(model: torch.nn.Module, wanted) -> list[tuple[torch.nn.Module, str, torch.nn.Module]]:
    """(parent, attribute, module) for every module outside the vision tower with wanted(module), each once."""
    out, seen = [], set()
    for name, parent in model.named_modules():
        if "vision" in name:
            continue
        for attr, child in parent.named_children():
            if "vision" not in attr and wanted(child) and id(child) not in seen:
                seen.add(id(child))
                out.append((parent, attr, child))
    return out


def _soft_embeddings(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder's token embedding, whose transpose the self-conditioning product multiplies by."""
    embed = getattr(getattr(getattr(model, "model", None), "decoder", None), "embed_tokens", None)
    w = getattr(embed, "weight", None)
    if (
        isinstance(w, torch.Tensor)
        and w.dtype == torch.bfloat16
        and w.device.type == "cpu"
        and not hasattr(embed, SOFT_KEY)
    ):
        return [embed]
    return []


def pack_linears(model: torch.nn.Module) -> int:
    """Replace the text stack's bf16 CPU linear layers by PackedLinear and its experts by PackedExperts,
    and pack the embedding's transpose for the self-conditioning product; returns how many weights were
    packed. Does nothing (0) on another device or dtype, without oneDNN, or past MAX_PACKED_BYTES."""
    if not _available():
        return 0
    mlps = _text_modules(model, _fusable_mlp)
    fused = {id(m.gate_proj) for _, _, m in mlps} | {id(m.up_proj) for _, _, m in mlps}  # packed as one, in PackedMLP
    found = _text_modules(
        model,
        lambda m: (
            isinstance(m, torch.nn.Linear)
            and m.weight.dtype == torch.bfloat16
            and m.weight.device.type == "cpu"
            and id(m) not in fused
        ),
    )
    experts = _text_modules(model, _packable_experts)
    embeds = _soft_embeddings(model)
    size = (
        sum(lin.weight.numel() * lin.weight.element_size() for _, _, lin in found)
        + sum((m.gate_proj.weight.numel() + m.up_proj.weight.numel()) * 2 for _, _, m in mlps)
        + sum((m.gate_up_proj.numel() + m.down_proj.numel()) * 2 for _, _, m in experts)
        + sum(m.weight.numel() * 2 for m in embeds)
    )
    if not found or size > MAX_PACKED_BYTES:
        if found:
            log.info("weights not prepacked: the copies would take %.1f GB", size / 1e9)
        return 0
    try:
        for parent, attr, lin in found:
            setattr(parent, attr, PackedLinear(lin))
        for parent, attr, mlp in mlps:  # after its down_proj was packed above
            setattr(parent, attr, PackedMLP(mlp))
        for parent, attr, module in experts:
            setattr(parent, attr, PackedExperts(module))
        for embed in embeds:  # (V, H) -> a packed (H, V) linear weight: probs @ E == linear(probs, E^T)
            setattr(embed, SOFT_KEY, _register(embed, _pack(embed.weight.t())))
    except Exception as exc:  # an old or unusual torch: the plain layers still work
        for parent, attr, mlp in mlps:
            setattr(parent, attr, mlp)
        for parent, attr, lin in found:
            setattr(parent, attr, lin)
        for parent, attr, module in experts:
            setattr(parent, attr, module)
        for embed in embeds:
            if hasattr(embed, SOFT_KEY):
                delattr(embed, SOFT_KEY)
        log.info("weights not prepacked (%s: %s)", type(exc).__name__, str(exc).splitlines()[0])
        return 0
    return len(found) + len(mlps) + sum(m.num_experts * 2 for _, _, m in experts) + len(embeds)
