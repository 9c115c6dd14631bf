"""Optional fused CPU kernel of the gated FFN's middle: y = GELU(a) * b, forward and backward.

As PyTorch operators the forward is a GELU and a product (two passes, one temporary kept for the
backward) and the backward two products and GELU's own backward (three passes). Here each is one
vectorised pass over the rows of a and b, which may be the two strided halves of one projection
(`dense.split_linear`); GELU(a) is recomputed in the backward instead of stored. The exact (erf)
GELU, as `F.gelu`. The kernel is csrc/gelu_gate.cpp, built by `cpu_build`; without it the FFN
runs its PyTorch operators.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bioxlstm.layers.cpu_kernels import GELU_GATE


def _rows(t: Tensor) -> Tensor:
    """t (..., F) as (N, F) rows with unit stride in F, a view where the layout allows."""
    rows = t.reshape(-1, t.shape[-1])
    return rows if rows.stride(-1) == 1 else rows.contiguous()


class _GeluGate(torch.autograd.Function):
    """GELU(a) * b on (N, F) rows, one pass each way."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(a, b)
        return GELU_GATE.load().forward(a, b)

    @staticmethod
    def backward(ctx, dy: Tensor):
        a, b = ctx.saved_tensors
        da, db = GELU_GATE.load().backward(dy.contiguous(), a, b)
        return da, db


def gelu_gate_supported(a: Tensor, b: Tensor) -> bool:
    """Whether the kernel can run a and b: same shape, CPU, one float32/64 dtype, built."""
    return (a.shape == b.shape and a.dtype == b.dtype and a.dtype in (torch.float32, torch.float64)
            and a.device.type == "cpu" and b.device.type == "cpu"
            and GELU_GATE.load() is not None)


def gelu_gate_fused(a: Tensor, b: Tensor) -> Tensor:
    """F.gelu(a) * b for a, b of one shape (..., F) through the compiled kernel (see module doc)."""
    return _GeluGate.apply(_rows(a), _rows(b)).view(a.shape)
