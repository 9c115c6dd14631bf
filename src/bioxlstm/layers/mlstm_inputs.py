"""The mLSTM layer's input side: conv + SiLU, q/k/v, i/f gates; PyTorch operators, a fused CPU
kernel, one dispatcher.

From the up-projected x_m (B, S, D): c = silu(causal depthwise conv(x_m)), q = BD_q(c),
k = BD_k(c), v = BD_v(x_m) with the small block-diagonal weights, and the gate pre-activations
[i; f] = W_g [q; k; v] + b_g. As separate operators this is about a dozen full-size passes each
way plus autograd's additions of the q/k/v gradients arriving from the cell and from the gates;
the fused kernel (csrc/mlstm_inputs.cpp) computes it one token row at a time while the row is in
cache, one pass each way. Its backward adds a row's conv input gradient K - 1 rows later, when
the later rows' gradients it needs are in a ring of K rows. The gates' weight gradient is a
batched BLAS product.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bioxlstm.layers.cpu_kernels import MLSTM_INPUTS
from bioxlstm.layers.fast_paths import FastPath, cpu_floats
from bioxlstm.layers.primitives import block_diagonal, causal_conv, conv_next_state

MLSTMInputs = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]
MAX_BLOCK = 64  # the largest q/k/v block size the kernel takes


def _rows(t: Tensor) -> Tensor:
    """t (B, S, D) with unit stride in D and a row stride shared by all tokens of a sequence."""
    return t if t.stride(2) == 1 and t.stride(0) == t.shape[1] * t.stride(1) else t.contiguous()


def _rows_product(g: Tensor, x: Tensor, blocks: int = 4) -> Tensor:
    """g^T x for g (N, G) with few columns and x (N, D), as a batched product over row blocks.

    MKL runs the (G x N) x (N x D) product with G = 8 at about 28 GFLOP/s on a 2-core CPU; the
    sum of four (G x N/4) x (N/4 x D) products in one batched call takes half the time.
    """
    N = x.shape[0]
    if N % blocks:
        return g.t() @ x
    gb = g.t().reshape(g.shape[1], blocks, N // blocks).transpose(0, 1)
    return torch.bmm(gb, x.view(blocks, N // blocks, x.shape[1])).sum(0)


class _MLSTMInputs(torch.autograd.Function):
    """c, q, k, v and the gate pre-activations from x_m, one pass each way."""

    @staticmethod
    def forward(ctx, x: Tensor, state: Tensor, wt: Tensor, cb: Tensor, Wq: Tensor, Wk: Tensor,
                Wv: Tensor, Wg: Tensor, bg: Tensor, num_heads: int):
        c, q, k, v, gates = MLSTM_INPUTS.load().forward(x, state, wt, cb, Wq, Wk, Wv, Wg, bg, num_heads)
        ctx.save_for_backward(x, state, wt, cb, Wq, Wk, Wv, Wg, bg, q, k, v)
        ctx.num_heads = num_heads
        return c, q, k, v, gates

    @staticmethod
    def backward(ctx, dc: Tensor, dq: Tensor, dk: Tensor, dv: Tensor, dgates: Tensor):
        x, state, wt, cb, Wq, Wk, Wv, Wg, bg, q, k, v = ctx.saved_tensors
        # autograd passes zeros for outputs that were not used, so every gradient is a tensor
        dc, dq, dk, dv = (_rows(g) for g in (dc, dq, dk, dv))
        dgates = dgates.contiguous()
        dx, dstate, dw, db, dWq, dWk, dWv = MLSTM_INPUTS.load().backward(
            dc, dq, dk, dv, dgates, x, state, wt, cb, Wq, Wk, Wv, Wg, bg, ctx.num_heads)
        # gate rows per token: (2, B, NH, S) -> (B S, 2 NH); then one product per input
        per_token = dgates.permute(1, 3, 0, 2).reshape(-1, Wg.shape[0])
        dWg = torch.cat([_rows_product(per_token, t.view(-1, t.shape[-1])) for t in (q, k, v)],
                        dim=1)
        return dx, dstate, dw, db, dWq, dWk, dWv, dWg, per_token.sum(0), None


def mlstm_inputs_reference(x: Tensor, conv_state: Tensor, conv_weight: Tensor, conv_bias: Tensor,
                           Wq: Tensor, Wk: Tensor, Wv: Tensor, gate_weight: Tensor,
                           gate_bias: Tensor, num_heads: int) -> MLSTMInputs:
    """(c, q, k, v, i, f, new conv state) in PyTorch operators; arguments as `mlstm_inputs_fused`."""
    c, conv_state = causal_conv(x, conv_state, conv_weight, conv_bias)
    c = F.silu(c)
    q, k, v = block_diagonal(c, Wq), block_diagonal(c, Wk), block_diagonal(x, Wv)
    D = q.shape[-1]  # gates from [q; k; v] without materialising the concatenation
    W = gate_weight
    gates = F.linear(q, W[:, :D], gate_bias) + F.linear(k, W[:, D:2 * D]) + F.linear(v, W[:, 2 * D:])
    i, f = gates.transpose(1, 2).split(num_heads, dim=1)
    return c, q, k, v, i, f, conv_state


def mlstm_inputs_fused(x: Tensor, conv_state: Tensor, conv_weight: Tensor, conv_bias: Tensor,
                       Wq: Tensor, Wk: Tensor, Wv: Tensor, gate_weight: Tensor, gate_bias: Tensor,
                       num_heads: int) -> MLSTMInputs:
    """(c, q, k, v, i, f, new conv state) of the mLSTM layer from x (B, S, D); see the module doc.

    conv_state (B, K - 1, D), conv_weight (D, K), conv_bias (D); Wq, Wk, Wv (D / bs, bs, bs);
    gate_weight (2 NH, 3 D) = [W_i; W_f] over [q; k; v] and gate_bias (2 NH). c, q, k, v come back
    (B, S, D), the cell's gates i and f (B, NH, S) and the conv state (B, K - 1, D).
    """
    c, q, k, v, gates = _MLSTMInputs.apply(
        _rows(x), conv_state.contiguous(), conv_weight.t().contiguous(), conv_bias.contiguous(),
        Wq.contiguous(), Wk.contiguous(), Wv.contiguous(), gate_weight.contiguous(),
        gate_bias.contiguous(), num_heads)
    return c, q, k, v, gates[0], gates[1], conv_next_state(x, conv_state, conv_weight.shape[1])


def mlstm_inputs_supported(x: Tensor, conv_state: Tensor, conv_weight: Tensor, conv_bias: Tensor,
                           Wq: Tensor, Wk: Tensor, Wv: Tensor, gate_weight: Tensor,
                           gate_bias: Tensor, num_heads: int) -> bool:
    """Whether `mlstm_inputs_fused` takes these tensors: CPU tensors of one dtype, float32/64, x
    not empty, q/k/v blocks of at most MAX_BLOCK."""
    return (x.numel() > 0 and Wq.shape[1] <= MAX_BLOCK
            and cpu_floats(x, conv_state, conv_weight, conv_bias, Wq, Wk, Wv, gate_weight, gate_bias))


mlstm_inputs = FastPath("mLSTM input side", mlstm_inputs_reference)
mlstm_inputs.register("fused", mlstm_inputs_fused, mlstm_inputs_supported, MLSTM_INPUTS)
