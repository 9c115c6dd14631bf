"""Optional fused CPU kernel of the mLSTM layer's output gate: per-head norm, skip and SiLU(z).

y = (LN_heads(h) * (1 + w) + skip * c) * silu(z) on token rows, one vectorised pass forward and
one backward instead of about a dozen full-size elementwise operators and their temporaries. The
per-(row, head) mean and reciprocal deviation are kept for the backward. The kernel is
csrc/mlstm_output_gate.cpp, built by `cpu_build`; without it the layer runs its PyTorch operators.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bioxlstm.layers.cpu_kernels import MLSTM_OUTPUT_GATE


def _unit_last(x: Tensor) -> Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


class _OutputGate(torch.autograd.Function):
    """(LN_heads(h) * (1 + w) + skip * c) * silu(z) on (N, D) rows, one pass each way."""

    @staticmethod
    def forward(ctx, h: Tensor, c: Tensor, z: Tensor, w: Tensor, skip: Tensor, num_heads: int,
                eps: float):
        y, mean, rstd = MLSTM_OUTPUT_GATE.load().forward(h, c, z, w, skip, num_heads, eps)
        ctx.save_for_backward(h, c, z, w, skip, mean, rstd)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        dh, dc, dz, dw, dskip = MLSTM_OUTPUT_GATE.load().backward(_unit_last(dy), *ctx.saved_tensors,
                                                                  ctx.eps)
        return dh, dc, dz, dw, dskip, None, None


def output_gate_supported(*tensors: Tensor) -> bool:
    """Whether the kernel can run these tensors: CPU, one float32/64 dtype, built."""
    dtype = tensors[0].dtype
    return (dtype in (torch.float32, torch.float64)
            and all(t.device.type == "cpu" and t.dtype == dtype for t in tensors)
            and MLSTM_OUTPUT_GATE.load() is not None)


def output_gate_fused(h: Tensor, c: Tensor, z: Tensor, norm_weight: Tensor, skip: Tensor,
                      eps: float) -> Tensor:
    """(MultiHeadNorm(h) + skip * c) * silu(z) for h (B, S, NH, DH), c and z (B, S, NH * DH)."""
    B, S, NH, DH = h.shape
    rows = [_unit_last(t.reshape(B * S, NH * DH)) for t in (h, c, z)]
    y = _OutputGate.apply(*rows, norm_weight.contiguous(), skip.contiguous(), NH, float(eps))
    return y.view(B, S, NH * DH)
