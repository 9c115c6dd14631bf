"""Dense products x W^T on CPU through oneDNN where it runs them faster than the default BLAS.

In float32 on CPU, `F.linear` goes to MKL's SGEMM. On AMD CPUs MKL runs AVX2 kernels, and oneDNN's
matmul (the `mkldnn::_linear_pointwise` op that torch.compile uses for CPU linears) runs the same
products with AVX-512: on the 2-core AMD EPYC of docs/performance.md, 205 against 149 GFLOP/s for
an (8192 x 256) x (256 x 1024) product. On Intel CPUs MKL's own AVX-512 kernels are as fast or
faster (a 2-core Xeon: 326 against 305 GFLOP/s for (8192 x 512) x (512 x 256)), so there `F.linear`
stays. `linear` and `split_linear` take oneDNN for the forward product and the input gradient; the
weight gradient stays with `torch.mm`, since oneDNN is slower there unless the activations are
first copied transposed. Other dtypes, autocast, other devices, a torch without the op (checked
once against `F.linear`) or BIOXLSTM_NO_EXTENSIONS=1 take `F.linear`. BIOXLSTM_DENSE=onednn or
=blas overrides the choice by CPU vendor.
"""

from __future__ import annotations

import os
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bioxlstm.cpuinfo import cpu_vendor
from bioxlstm.errors import ConfigError
from bioxlstm.layers.cpu_build import extensions_disabled


@cache
def onednn_available() -> bool:
    """Whether torch's oneDNN linear op exists here and agrees with F.linear on a small product."""
    if extensions_disabled() or not torch.backends.mkldnn.is_available():
        return False
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if op is None:
        return False
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(16, 24, generator=g), torch.randn(8, 24, generator=g)
    try:
        return bool(torch.allclose(op(x, w, None, "none", [], ""), F.linear(x, w), atol=1e-4))
    except (RuntimeError, TypeError):
        return False


DENSE_CHOICES = ("auto", "onednn", "blas")


@cache
def onednn_preferred() -> bool:
    """Whether float32 CPU products take oneDNN: BIOXLSTM_DENSE, else yes on AMD CPUs only."""
    choice = os.environ.get("BIOXLSTM_DENSE", "auto").strip().lower() or "auto"
    if choice not in DENSE_CHOICES:
        raise ConfigError(f"BIOXLSTM_DENSE must be one of {', '.join(DENSE_CHOICES)}; "
                         f"got {choice!r}")
    if choice == "blas" or not onednn_available():
        return False
    return choice == "onednn" or cpu_vendor() == "AuthenticAMD"


def _applies(x: Tensor, weight: Tensor) -> bool:
    """Whether the direct oneDNN product applies: float32 on a CPU where it is preferred, outside
    autocast and outside torch.compile (inductor lowers F.linear itself, but could take the
    direct call's weight only as a frozen constant)."""
    return (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()
            and onednn_preferred())


def mm_t(x: Tensor, weight: Tensor) -> Tensor:
    """x (N, K) @ weight (M, K)^T without autograd, through oneDNN where that applies."""
    if _applies(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight.contiguous(), None,
                                                  "none", [], "")
    return F.linear(x, weight)


class _Linear(torch.autograd.Function):
    """x W^T with oneDNN for the output and the input gradient, torch.mm for the weight's."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        flat = x.reshape(-1, x.shape[-1])
        return mm_t(flat, weight).view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, weight = ctx.saved_tensors
        rows = dy.reshape(-1, weight.shape[0])
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = mm_t(rows, weight.t()).view_as(x)
        if ctx.needs_input_grad[1]:
            dw = rows.t() @ x.reshape(-1, x.shape[-1])
        return dx, dw


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.linear(x, weight, bias); float32 on CPU without a bias may take oneDNN (module doc)."""
    if bias is None and _applies(x, weight):
        return _Linear.apply(x, weight)
    return F.linear(x, weight, bias)


class _SplitLinear(torch.autograd.Function):
    """x W^T split into its two halves along the features, without concatenating their gradients.

    Autograd's backward of `linear(x, W).chunk(2, -1)` first copies both halves' gradients into one
    tensor; here each half's gradient goes straight into the products that need it.
    """

    @staticmethod
    def forward(ctx, x: Tensor, W: Tensor) -> tuple[Tensor, Tensor]:
        ctx.save_for_backward(x, W)
        flat = x.reshape(-1, x.shape[-1])
        return mm_t(flat, W).view(*x.shape[:-1], W.shape[0]).chunk(2, dim=-1)

    @staticmethod
    def backward(ctx, da: Tensor, db: Tensor):
        x, W = ctx.saved_tensors
        half = W.shape[0] // 2
        rows = [g.reshape(-1, half) for g in (da, db)]  # autograd fills an unused half with zeros
        dx = mm_t(rows[0], W[:half].t())
        dx += mm_t(rows[1], W[half:].t())
        flat = x.reshape(-1, x.shape[-1])
        dW = torch.cat([g.t() @ flat for g in rows])
        return dx.view_as(x), dW


def split_linear(x: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """The two halves of F.linear(x, weight) (no bias) along the last dim, as views of one product.

    Under autocast both operands are cast to the autocast dtype first, as F.linear would be.
    """
    device = x.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        with torch.autocast(device, enabled=False):
            return _SplitLinear.apply(x.to(dtype), weight.to(dtype))
    if x.dtype != weight.dtype:
        return F.linear(x, weight).chunk(2, dim=-1)
    return _SplitLinear.apply(x, weight)


class Linear(nn.Linear):
    """nn.Linear whose product goes through `linear`; same parameters and state dict keys."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
