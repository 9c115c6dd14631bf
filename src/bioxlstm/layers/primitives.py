"""Small building blocks of the xLSTM: norms, causal depthwise conv, block-diagonal linear, RoPE."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def small_init_(weight: Tensor, dim: int) -> Tensor:
    """'small' init: N(0, sqrt(2 / (5 d))) (SPEC section 1)."""
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
        y = F.layer_norm(x, (x.shape[-1],), None, None, self.eps)
        return y.flatten(-2) * (1.0 + self.weight)


class CausalConv1d(nn.Module):
    """Depthwise causal conv over time; its state is the last kernel-1 inputs, for step mode."""

    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(dim, 1, kernel_size))
        self.bias = nn.Parameter(torch.zeros(dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (B, S, D), state (B, K-1, D) -> y (B, S, D), new state."""
        K = self.kernel_size
        if state is None:
            state = x.new_zeros(x.shape[0], K - 1, x.shape[2])
        xp = torch.cat([state.to(x.dtype), x], dim=1)
        y = F.conv1d(xp.transpose(1, 2), self.weight, self.bias, groups=x.shape[2])
        return y.transpose(1, 2), xp[:, xp.shape[1] - (K - 1):].clone()


class BlockDiagonalLinear(nn.Module):
    """Linear map with a block-diagonal weight: blocks of `block_size` x `block_size`, no bias."""

    def __init__(self, dim: int, block_size: int):
        super().__init__()
        if dim % block_size:
            raise ValueError(f"block size {block_size} does not divide width {dim}")
        self.block_size = block_size
        self.weight = nn.Parameter(torch.empty(dim // block_size, block_size, block_size))

    def forward(self, x: Tensor) -> Tensor:
        nb, bs = self.weight.shape[0], self.block_size
        y = torch.einsum("...hi,hoi->...ho", x.unflatten(-1, (nb, bs)), self.weight)
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
