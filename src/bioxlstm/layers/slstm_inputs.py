"""The sLSTM layer's input side: conv + SiLU and the four gate inputs; PyTorch operators, a fused
CPU kernel, one dispatcher.

From the normed x (B, S, D): c = silu(causal depthwise conv(x)), and the scan's gate inputs
wx = [W_i c; W_f c; W_z x; W_o x] (each block-diagonal per head) in the scan's (B, S, 4, NH, DH)
layout. As separate operators this is a concatenation for the conv's left padding, K
multiply-adds, four block-diagonal products with their layout copies and a stack, each way. The
fused kernel (csrc/slstm_inputs.cpp) works in tiles of eight token rows, summing the head-sized
products of several rows in registers at once, so each weight row loaded serves them all and
their independent sums keep the FMA units busy; its forward is one pass and its backward two (the
gates, the SiLU and all weight gradients per row, then the conv's input gradient, which needs the
next K - 1 rows). It has an AVX-512 build where the CPU has it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bioxlstm.layers.cpu_kernels import SLSTM_INPUTS
from bioxlstm.layers.fast_paths import FastPath, cpu_floats
from bioxlstm.layers.primitives import block_diagonal, causal_conv, conv_next_state


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


def slstm_inputs_reference(x: Tensor, conv_state: Tensor, conv_weight: Tensor, conv_bias: Tensor,
                           gate_weights: Tensor) -> tuple[Tensor, Tensor]:
    """(wx, new conv state) in PyTorch operators; arguments as `slstm_inputs_fused`."""
    c, conv_state = causal_conv(x, conv_state, conv_weight, conv_bias)
    c = F.silu(c)
    W = gate_weights
    gates = (block_diagonal(c, W[0]), block_diagonal(c, W[1]), block_diagonal(x, W[2]),
             block_diagonal(x, W[3]))
    return torch.stack(gates, dim=2).unflatten(-1, W.shape[1:3]), conv_state


def slstm_inputs_fused(x: Tensor, conv_state: Tensor, conv_weight: Tensor, conv_bias: Tensor,
                       gate_weights: Tensor) -> tuple[Tensor, Tensor]:
    """The scan's gate inputs wx (B, S, 4, NH, DH) from x (B, S, D), and the new conv state.

    conv_state (B, K - 1, D), conv_weight (D, K), conv_bias (D); gate_weights (4, NH, DH, DH), the
    i, f, z and o blocks [head][out][in] (i and f read the conv's output, z and o read x).
    """
    wx = _SLSTMInputs.apply(x.contiguous(), conv_state.contiguous(), conv_weight.t().contiguous(),
                            conv_bias.contiguous(), gate_weights.contiguous())
    return wx, conv_next_state(x, conv_state, conv_weight.shape[1])


def slstm_inputs_supported(x: Tensor, conv_state: Tensor, conv_weight: Tensor, conv_bias: Tensor,
                           gate_weights: Tensor) -> bool:
    """Whether `slstm_inputs_fused` takes these tensors: x not empty, and x, the conv weight and
    the gate weights CPU tensors of one dtype, float32/64 (the state is converted)."""
    return x.numel() > 0 and cpu_floats(x, gate_weights, conv_weight)


slstm_inputs = FastPath("sLSTM input side", slstm_inputs_reference)
slstm_inputs.register("fused", slstm_inputs_fused, slstm_inputs_supported, SLSTM_INPUTS)
