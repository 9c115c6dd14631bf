"""The mLSTM layer's output gate: PyTorch operators, a fused CPU kernel, one dispatcher.

y = (LN_heads(h) * (1 + w) + skip * c) * silu(z) on token rows. The fused kernel
(csrc/mlstm_output_gate.cpp) makes one vectorised pass forward and one backward instead of about a
dozen full-size elementwise operators and their temporaries, keeping the per-(row, head) mean and
reciprocal deviation for the backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bioxlstm.layers.cpu_kernels import MLSTM_OUTPUT_GATE
from bioxlstm.layers.fast_paths import FastPath, cpu_floats
from bioxlstm.layers.primitives import multi_head_norm


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


def output_gate_reference(h: Tensor, c: Tensor, z: Tensor, norm_weight: Tensor, skip: Tensor,
                          eps: float) -> Tensor:
    """(MultiHeadNorm(h) + skip * c) * silu(z) in PyTorch operators."""
    return torch.addcmul(multi_head_norm(h, norm_weight, eps), skip, c) * F.silu(z)


def output_gate_fused(h: Tensor, c: Tensor, z: Tensor, norm_weight: Tensor, skip: Tensor,
                      eps: float) -> Tensor:
    """(MultiHeadNorm(h) + skip * c) * silu(z) for h (B, S, NH, DH), c and z (B, S, NH * DH)."""
    B, S, NH, DH = h.shape
    rows = [_unit_last(t.reshape(B * S, NH * DH)) for t in (h, c, z)]
    y = _OutputGate.apply(*rows, norm_weight.contiguous(), skip.contiguous(), NH, float(eps))
    return y.view(B, S, NH * DH)


def output_gate_supported(h: Tensor, c: Tensor, z: Tensor, norm_weight: Tensor, skip: Tensor,
                          eps: float) -> bool:
    """Whether `output_gate_fused` takes these tensors: CPU tensors of one dtype, float32/64."""
    return cpu_floats(h, c, z, norm_weight, skip)


output_gate = FastPath("mLSTM output gate", output_gate_reference)
output_gate.register("fused", output_gate_fused, output_gate_supported, MLSTM_OUTPUT_GATE)
