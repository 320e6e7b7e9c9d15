"""bf16 linear layers on a CPU with their weights prepacked for oneDNN, once at load.

A bf16 `nn.Linear` on a CPU reorders its weight into oneDNN's blocked layout on every call; packing
it once (what inductor's `freezing` does) makes the same products faster and bitwise equal
(`tests/test_speed_defaults.py`). Measured on one core of the 2-core machine, a 32-token canvas: the
LM head (12288 x 512) 3.1 -> 2.1 ms, a 1536 x 512 projection 285 -> 239 us; a compiled decoder step of
the `small` preset 42 -> 37 ms (`benchmarks/latency.py --packed-ab`).

inductor's `freezing` packs too, but its graphs hold the packed (mkldnn) tensors as constants, which
its FX graph cache cannot store: 40-60 s of compiling at every start. Here the packed weights live in
a registry outside the graph and the layers call them through one custom op, `canvas_ls::packed_linear`,
which torch.compile keeps as an opaque call: the compiled step stays cacheable.

    n = pack_linears(model)      # after loading; 0 (nothing changed) where it does not apply

The text stack's linear layers are replaced by `PackedLinear`, which keeps the original weight as its
parameter (state_dict, tied embeddings and `.dtype` see what they saw) beside the packed copy: the
packed copies cost as much memory again as those weights, so models whose copies would exceed
MAX_PACKED_BYTES are left as they are.
"""

from __future__ import annotations

import itertools
import logging
import weakref

import torch

log = logging.getLogger("canvas_ls.model.packed_linear")

MAX_PACKED_BYTES = 1 << 30  # the packed copies' memory at most (the `small` preset's: ~62 MB)
_BATCH_HINT = 32  # rows oneDNN plans the packing for: a single-line canvas (any row count works)

_packed: dict[int, torch.Tensor] = {}  # key -> packed weight, dropped when its layer is collected
_keys = itertools.count()


def _available() -> bool:
    return (
        hasattr(torch, "library")
        and hasattr(torch.library, "custom_op")
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


_op = None  # the custom op, registered on first use (torch >= 2.4 has torch.library.custom_op)


def _packed_linear_op():
    global _op
    if _op is None:

        @torch.library.custom_op("canvas_ls::packed_linear", mutates_args=())
        def packed_linear(x: torch.Tensor, key: int, out_features: int, bias: torch.Tensor | None) -> torch.Tensor:
            return torch.ops.mkldnn._linear_pointwise(x, _packed[key], bias, "none", [], "")

        @packed_linear.register_fake
        def _(x, key, out_features, bias):
            return x.new_empty((*x.shape[:-1], out_features))

        _op = packed_linear
    return _op


class PackedLinear(torch.nn.Module):
    """An `nn.Linear` whose products use a prepacked copy of its weight (see the module docstring)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # the same Parameter: tied weights and state_dict keys stay
        self.bias = linear.bias
        self.key = next(_keys)
        _packed[self.key] = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), _BATCH_HINT)
        weakref.finalize(self, _packed.pop, self.key, None)
        self._op = _packed_linear_op()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._op(x, self.key, self.out_features, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed for oneDNN"


def _text_linears(model: torch.nn.Module) -> list[tuple[torch.nn.Module, str, torch.nn.Linear]]:
    """(parent, attribute, layer) for every linear layer outside the vision tower, each once."""
    out, seen = [], set()
    for name, parent in model.named_modules():
        if "vision" in name:
            continue
        for attr, child in parent.named_children():
            if isinstance(child, torch.nn.Linear) and "vision" not in attr and id(child) not in seen:
                seen.add(id(child))
                out.append((parent, attr, child))
    return out


def pack_linears(model: torch.nn.Module) -> int:
    """Replace the text stack's bf16 CPU linear layers by PackedLinear; returns how many. Does nothing
    (0) on another device or dtype, without oneDNN, or past MAX_PACKED_BYTES."""
    if not _available():
        return 0
    found = [
        (parent, attr, lin)
        for parent, attr, lin in _text_linears(model)
        if lin.weight.dtype == torch.bfloat16 and lin.weight.device.type == "cpu"
    ]
    size = sum(lin.weight.numel() * lin.weight.element_size() for _, _, lin in found)
    if not found or size > MAX_PACKED_BYTES:
        if found:
            log.info("linear weights not prepacked: the copies would take %.1f GB", size / 1e9)
        return 0
    try:
        for parent, attr, lin in found:
            setattr(parent, attr, PackedLinear(lin))
    except Exception as exc:  # an old or unusual torch: the plain layers still work
        for parent, attr, lin in found:
            setattr(parent, attr, lin)
        log.info("linear weights not prepacked (%s: %s)", type(exc).__name__, str(exc).splitlines()[0])
        return 0
    return len(found)
