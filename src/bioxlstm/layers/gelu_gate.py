"""The gated FFN's middle, y = GELU(a) * b: PyTorch operators, a fused CPU kernel, one dispatcher.

As PyTorch operators the forward is a GELU and a product (two passes, one temporary kept for the
backward) and the backward two products and GELU's own backward (three passes). The fused kernel
(csrc/gelu_gate.cpp) does each in one vectorised pass over the rows of a and b, which may be the
two strided halves of one projection (`dense.split_linear`), and recomputes GELU(a) in the
backward instead of storing it. The exact (erf) GELU, as `F.gelu`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bioxlstm.layers.cpu_kernels import GELU_GATE
from bioxlstm.layers.fast_paths import FastPath, cpu_floats


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


def gelu_gate_reference(a: Tensor, b: Tensor) -> Tensor:
    """F.gelu(a) * b in PyTorch operators."""
    return F.gelu(a) * b


def gelu_gate_fused(a: Tensor, b: Tensor) -> Tensor:
    """F.gelu(a) * b for a, b of one shape (..., F) through the compiled kernel (see module doc)."""
    return _GeluGate.apply(_rows(a), _rows(b)).view(a.shape)


def gelu_gate_supported(a: Tensor, b: Tensor) -> bool:
    """Whether `gelu_gate_fused` takes a and b: one shape, CPU tensors of one dtype, float32/64."""
    return a.shape == b.shape and cpu_floats(a, b)


gelu_gate = FastPath("GELU gate", gelu_gate_reference)
gelu_gate.register("fused", gelu_gate_fused, gelu_gate_supported, GELU_GATE)
