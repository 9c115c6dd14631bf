"""Small building blocks of the xLSTM: norms, causal depthwise conv, block-diagonal linear, RoPE."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def small_init_(weight: Tensor, dim: int) -> Tensor:
    """'small' init: N(0, sqrt(2 / (5 d))) (docs/model.md, section 4)."""
    return nn.init.normal_(weight, mean=0.0, std=math.sqrt(2.0 / (5.0 * dim)))


def wang_init_(weight: Tensor, dim: int, num_blocks: int) -> Tensor:
    """'wang' init for output projections: N(0, 2 / (L sqrt(d)))."""
    return nn.init.normal_(weight, mean=0.0, std=2.0 / (num_blocks * math.sqrt(dim)))


class LayerNorm(nn.Module):
    """LayerNorm with weight 1 + gamma (gamma starts at 0) and no bias."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, (x.shape[-1],), 1.0 + self.weight, None, self.eps)


class MultiHeadNorm(nn.Module):
    """Per-head normalisation of (..., NH, DH) followed by a weight 1 + gamma; returns (..., NH*DH)."""

    def __init__(self, num_heads: int, head_dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_heads * head_dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return multi_head_norm(x, self.weight, self.eps)


def multi_head_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """`MultiHeadNorm` as a function: x (..., NH, DH) normed per head, times 1 + weight (NH * DH)."""
    y = F.layer_norm(x, (x.shape[-1],), None, None, eps)
    return y.flatten(-2) * (1.0 + weight)


class _ShiftedMultiplyAdd(torch.autograd.Function):
    """y[t] = b + sum_k w[:, k] * xp[t + k]: the depthwise causal conv on a left-padded input.

    A hand-written backward keeps autograd from zero-filling a full-size gradient per tap.
    """

    @staticmethod
    def forward(ctx, xp: Tensor, w: Tensor, b: Tensor) -> Tensor:
        K = w.shape[1]
        S = xp.shape[1] - K + 1
        y = torch.addcmul(b, xp[:, :S], w[:, 0])
        for k in range(1, K):
            y.addcmul_(xp[:, k:k + S], w[:, k])
        ctx.save_for_backward(xp, w)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        xp, w = ctx.saved_tensors
        K = w.shape[1]
        S = dy.shape[1]
        dxp = torch.zeros_like(xp)
        for k in range(K):
            dxp[:, k:k + S].addcmul_(dy, w[:, k])
        flat = dy.reshape(-1, dy.shape[-1])
        dw = torch.stack([(xp[:, k:k + S].reshape(-1, dy.shape[-1]) * flat).sum(0)
                          for k in range(K)], dim=1)
        return dxp, dw, flat.sum(0)


class CausalConv1d(nn.Module):
    """Depthwise causal conv over time; its state is the last kernel-1 inputs, for step mode.

    Computed as kernel-size shifted multiply-adds in (B, S, D) layout: no transposes, and cheaper
    than a library depthwise conv both for training lengths and for single steps.
    """

    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(dim, kernel_size))
        self.bias = nn.Parameter(torch.zeros(dim))
        bound = 1.0 / math.sqrt(kernel_size)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (B, S, D), state (B, K-1, D) -> y (B, S, D), new state."""
        return causal_conv(x, state, self.weight, self.bias)


def causal_conv(x: Tensor, state: Tensor | None, weight: Tensor,
                bias: Tensor) -> tuple[Tensor, Tensor]:
    """`CausalConv1d` as a function: x (B, S, D), state (B, K-1, D) or None (zeros), weight (D, K),
    bias (D) -> y (B, S, D), new state."""
    K = weight.shape[1]
    if state is None:
        state = x.new_zeros(x.shape[0], K - 1, x.shape[2])
    xp = torch.cat([state.to(x.dtype), x], dim=1)
    y = _ShiftedMultiplyAdd.apply(xp, weight.to(x.dtype), bias.to(x.dtype))
    return y, xp[:, xp.shape[1] - (K - 1):].clone()


def conv_next_state(x: Tensor, state: Tensor, kernel_size: int) -> Tensor:
    """The causal conv's state after x (B, S, D): the last kernel_size-1 rows of [state; x]."""
    K, S = kernel_size, x.shape[1]
    tail = x[:, S - (K - 1):] if S >= K - 1 else torch.cat([state[:, S:].to(x.dtype), x], 1)
    return tail.clone()


class _SmallBlockMatmul(torch.autograd.Function):
    """y[..., h, o] = sum_i x[..., h, i] W[h, o, i] for small blocks, as block-size multiply-adds.

    For blocks of a few channels a batched matmul spends its time permuting; multiply-adds over
    the (..., blocks, size) layout do not move the data.
    """

    @staticmethod
    def forward(ctx, x: Tensor, W: Tensor) -> Tensor:
        xs = x.unflatten(-1, (W.shape[0], W.shape[1]))
        y = xs[..., 0:1] * W[:, :, 0]
        for i in range(1, W.shape[2]):
            y.addcmul_(xs[..., i:i + 1], W[:, :, i])
        ctx.save_for_backward(x, W)
        return y.flatten(-2)

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, W = ctx.saved_tensors
        nb, bs = W.shape[0], W.shape[1]
        dys = dy.unflatten(-1, (nb, bs))
        dx = dys[..., 0:1] * W[:, 0, :]
        for o in range(1, bs):
            dx.addcmul_(dys[..., o:o + 1], W[:, o, :])
        dys = dys.reshape(-1, nb, bs)
        xs = x.reshape(-1, nb, bs)
        # per input channel i: a multiply and a sum over tokens; a batched matmul over the
        # 128 tiny blocks would spend its time permuting
        dW = torch.stack([(dys * xs[..., i:i + 1]).sum(0) for i in range(bs)], dim=-1)
        return dx.flatten(-2), dW


class BlockDiagonalLinear(nn.Module):
    """Linear map with a block-diagonal weight: blocks of `block_size` x `block_size`, no bias.

    Large inputs with small blocks take the multiply-add path; small inputs (a generation step)
    one einsum call, whose fixed cost is lower.
    """

    SMALL_BLOCK = 8
    MIN_ELEMENTS = 1 << 16

    def __init__(self, dim: int, block_size: int):
        super().__init__()
        if dim % block_size:
            raise ValueError(f"block size {block_size} does not divide width {dim}")
        self.block_size = block_size
        self.weight = nn.Parameter(torch.empty(dim // block_size, block_size, block_size))

    def forward(self, x: Tensor) -> Tensor:
        return block_diagonal(x, self.weight)


def block_diagonal(x: Tensor, weight: Tensor) -> Tensor:
    """`BlockDiagonalLinear` as a function: x (..., D) times the blocks weight (D / bs, bs, bs)."""
    W = weight.to(x.dtype)
    block_size = W.shape[1]
    if block_size <= BlockDiagonalLinear.SMALL_BLOCK and x.numel() >= BlockDiagonalLinear.MIN_ELEMENTS:
        return _SmallBlockMatmul.apply(x, W)
    y = torch.einsum("...hi,hoi->...ho", x.unflatten(-1, (W.shape[0], block_size)), W)
    return y.flatten(-2)


def rotary(x: Tensor, position_ids: Tensor, theta: float) -> Tensor:
    """Rotary position embedding on the last dim of x (B, NH, S, DH) at positions (B, S)."""
    DH = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, DH, 2, device=x.device, dtype=torch.float32) / DH)
    angles = position_ids.to(torch.float32).unsqueeze(-1) * inv_freq  # (B, S, DH/2)
    cos = angles.cos().unsqueeze(1).to(x.dtype)
    sin = angles.sin().unsqueeze(1).to(x.dtype)
    x1, x2 = x[..., : DH // 2], x[..., DH // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
