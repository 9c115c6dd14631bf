"""Optional fused CPU kernel of the sLSTM layer's input side: conv + SiLU and the four gate inputs.

From the normed x (B, S, D) it computes, in tiles of eight token rows: c = silu(causal depthwise
conv(x)), and the scan's gate inputs wx = [W_i c; W_f c; W_z x; W_o x] (each block-diagonal per
head) written straight into the scan's (B, S, 4, NH, DH) layout. The head-sized products of
several rows are summed in registers at once, so each weight row loaded serves them all and their
independent sums keep the FMA units busy (one row's chain of sums waits on each FMA's latency).
As separate operators this is a concatenation for the conv's left padding, K multiply-adds,
four block-diagonal products with their layout copies and a stack, each way; here the forward is
one pass and the backward two (the gates, the SiLU and all weight gradients per row, then the
conv's input gradient, which needs the next K - 1 rows). The kernel is csrc/slstm_inputs.cpp,
built by `cpu_build` (with an AVX-512 build where the CPU has it); without it the layer runs its
PyTorch operators.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bioxlstm.layers.cpu_kernels import SLSTM_INPUTS


class _SLSTMInputs(torch.autograd.Function):
    """wx from x, one pass forward and two back."""

    @staticmethod
    def forward(ctx, x: Tensor, state: Tensor, wt: Tensor, cb: Tensor, W: Tensor) -> Tensor:
        c, wx = SLSTM_INPUTS.load().forward(x, state, wt, cb, W)
        ctx.save_for_backward(x, state, wt, cb, W, c)
        return wx

    @staticmethod
    def backward(ctx, dwx: Tensor):
        x, state, wt, cb, W, c = ctx.saved_tensors
        dwx = dwx.contiguous()
        return tuple(SLSTM_INPUTS.load().backward(dwx, x, c, state, wt, cb, W))


def slstm_inputs_supported(x: Tensor, *weights: Tensor) -> bool:
    """Whether the kernel can run these tensors: CPU, one float32/64 dtype, non-empty, built."""
    return (x.dtype in (torch.float32, torch.float64) and x.numel() > 0
            and all(t.device.type == "cpu" and t.dtype == x.dtype for t in (x, *weights))
            and SLSTM_INPUTS.load() is not None)


def slstm_inputs_fused(x: Tensor, conv_state: Tensor, conv_weight: Tensor, conv_bias: Tensor,
                       gate_weights: Tensor) -> Tensor:
    """The scan's gate inputs wx (B, S, 4, NH, DH) from x (B, S, D); see the module doc.

    conv_state (B, K - 1, D), conv_weight (D, K), conv_bias (D); gate_weights (4, NH, DH, DH), the
    i, f, z and o blocks [head][out][in] (i and f read the conv's output, z and o read x).
    """
    return _SLSTMInputs.apply(x.contiguous(), conv_state.contiguous(),
                              conv_weight.t().contiguous(), conv_bias.contiguous(),
                              gate_weights.contiguous())
