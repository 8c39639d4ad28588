"""Linear layers of our forward: fused projections, with weights prepacked for oneDNN on CPU.

Two things make a CPU decode step faster without changing what it computes:
fusing q/k/v (and gate/up) into one matmul each, and running the matmuls
through oneDNN with weights reordered once into its blocked layout. For the
few-row matmuls of decoding, MKL's ``F.linear`` path is about twice as slow on
this kind of CPU (measured: 64 vs 32 ms for SmolLM2-135M's weights at 16 rows).
Elsewhere (CUDA, fp16, a torch without oneDNN) it is ``F.linear``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_PACKABLE = (torch.float32, torch.bfloat16)


def _can_pack(weight: torch.Tensor) -> bool:
    ops = torch.ops.mkldnn  # private ops (what inductor uses); absent in some builds
    return (weight.device.type == "cpu" and weight.dtype in _PACKABLE and torch.backends.mkldnn.is_available()
            and hasattr(ops, "_linear_pointwise") and hasattr(ops, "_reorder_linear_weight"))


class PackedLinear:
    """``y = x @ W.T + b`` for the row-wise concatenation of one or more ``nn.Linear``.

    With several modules, their parameters become views into the fused weight,
    so the transformers model keeps working and no memory is duplicated (except
    the packed copy on CPU).

    Example::

        qkv = PackedLinear([attn.q_proj, attn.k_proj, attn.v_proj])
        q, k, v = qkv(x).split(qkv.out_features, dim=-1)
    """

    def __init__(self, modules: list[torch.nn.Linear]):
        # Normal tensors even when built under inference_mode: the modules' parameters become views
        # of the fused weight, and transformers' own forward must still accept them.
        with torch.inference_mode(False), torch.no_grad():
            self._fuse(modules)

    def _fuse(self, modules: list[torch.nn.Linear]) -> None:
        self.out_features = [m.out_features for m in modules]
        if len(modules) == 1:
            self.weight, self.bias = modules[0].weight.detach(), _detached(modules[0].bias)
        else:
            self.weight = torch.cat([m.weight.detach() for m in modules])
            biases = [m.bias for m in modules]
            self.bias = None
            if any(b is not None for b in biases):
                self.bias = torch.cat([b.detach() if b is not None else self.weight.new_zeros(m.out_features)
                                       for b, m in zip(biases, modules)])
            start = 0
            for m in modules:  # the modules now read the fused storage: one copy of the weights
                end = start + m.out_features
                m.weight.data = self.weight[start:end]
                if m.bias is not None:
                    m.bias.data = self.bias[start:end]
                start = end
        self._packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, 16) if _can_pack(self.weight) else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self._packed, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


def _detached(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach()
