"""Optional fused CPU kernel of the gated FFN's middle: y = GELU(a) * b, forward and backward.

As PyTorch operators the forward is a GELU and a product (two passes, one temporary kept for the
backward) and the backward two products and GELU's own backward (three passes). Here each is one
vectorised pass over the rows of a and b, which may be the two strided halves of one projection
(`dense.split_linear`); GELU(a) is recomputed in the backward instead of stored. The exact (erf)
GELU, as `F.gelu`. Built by `cpu_build`; without it the FFN runs its PyTorch operators.
"""

from __future__ import annotations

from functools import cache
from types import ModuleType

import torch
from torch import Tensor

from bioxlstm.layers.cpu_build import SIMD_PRELUDE, build_extension

_SOURCE = SIMD_PRELUDE + r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <vector>

template <typename T> static BX_INLINE T phi(T x) {  // the standard normal CDF
  return T(0.5) * (T(1) + std::erf(x * T(M_SQRT1_2)));
}

// Rows [r0, r1) of F values: y = gelu(a) * b; a, b with row strides sa, sb, y contiguous.
template <typename T>
BX_CLONES static void forward_rows(const T* a, int64_t sa, const T* b, int64_t sb, T* y,
                                   int64_t F, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const T *ar = a + r * sa, *br = b + r * sb;
    T* yr = y + r * F;
#pragma omp simd
    for (int64_t j = 0; j < F; ++j) yr[j] = ar[j] * phi(ar[j]) * br[j];
  }
}

// da = dy * b * gelu'(a), db = dy * gelu(a), with gelu'(x) = phi(x) + x * pdf(x).
template <typename T>
BX_CLONES static void backward_rows(const T* dy, const T* a, int64_t sa, const T* b, int64_t sb,
                                    T* da, T* db, int64_t F, int64_t r0, int64_t r1) {
  const T c = T(0.5) * T(M_2_SQRTPI) * T(M_SQRT1_2);  // 1 / sqrt(2 pi)
  for (int64_t r = r0; r < r1; ++r) {
    const T *ar = a + r * sa, *br = b + r * sb, *g = dy + r * F;
    T *dar = da + r * F, *dbr = db + r * F;
#pragma omp simd
    for (int64_t j = 0; j < F; ++j) {
      const T x = ar[j], p = phi(x);
      dar[j] = g[j] * br[j] * (p + x * c * std::exp(T(-0.5) * x * x));
      dbr[j] = g[j] * x * p;
    }
  }
}

// a, b (N, F) with unit stride in F.
at::Tensor forward(at::Tensor a, at::Tensor b) {
  const int64_t N = a.size(0), F = a.size(1);
  auto y = at::empty({N, F}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "gelu_gate_forward", [&] {
    const scalar_t *ap = a.data_ptr<scalar_t>(), *bp = b.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    at::parallel_for(0, N, 64, [&](int64_t r0, int64_t r1) {
      forward_rows<scalar_t>(ap, a.stride(0), bp, b.stride(0), yp, F, r0, r1);
    });
  });
  return y;
}

// dy (N, F) contiguous; returns da, db (N, F).
std::vector<at::Tensor> backward(at::Tensor dy, at::Tensor a, at::Tensor b) {
  const int64_t N = a.size(0), F = a.size(1);
  auto da = at::empty({N, F}, a.options()), db = at::empty({N, F}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "gelu_gate_backward", [&] {
    const scalar_t *gp = dy.data_ptr<scalar_t>(), *ap = a.data_ptr<scalar_t>();
    const scalar_t* bp = b.data_ptr<scalar_t>();
    scalar_t *dap = da.data_ptr<scalar_t>(), *dbp = db.data_ptr<scalar_t>();
    at::parallel_for(0, N, 64, [&](int64_t r0, int64_t r1) {
      backward_rows<scalar_t>(gp, ap, a.stride(0), bp, b.stride(0), dap, dbp, F, r0, r1);
    });
  });
  return {da, db};
}
"""


@cache
def load() -> ModuleType | None:
    """The compiled module, built once per machine and cached by torch; None if unavailable."""
    return build_extension("bioxlstm_gelu_gate_cpu_v1", _SOURCE, ["forward", "backward"],
                           "GELU-gate CPU kernel")


def _rows(t: Tensor) -> Tensor:
    """t (..., F) as (N, F) rows with unit stride in F, a view where the layout allows."""
    rows = t.reshape(-1, t.shape[-1])
    return rows if rows.stride(-1) == 1 else rows.contiguous()


class _GeluGate(torch.autograd.Function):
    """GELU(a) * b on (N, F) rows, one pass each way."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(a, b)
        return load().forward(a, b)

    @staticmethod
    def backward(ctx, dy: Tensor):
        a, b = ctx.saved_tensors
        da, db = load().backward(dy.contiguous(), a, b)
        return da, db


def gelu_gate_supported(a: Tensor, b: Tensor) -> bool:
    """Whether the kernel can run a and b: same shape, CPU, one float32/64 dtype, built."""
    return (a.shape == b.shape and a.dtype == b.dtype and a.dtype in (torch.float32, torch.float64)
            and a.device.type == "cpu" and b.device.type == "cpu" and load() is not None)


def gelu_gate_fused(a: Tensor, b: Tensor) -> Tensor:
    """F.gelu(a) * b for a, b of one shape (..., F) through the compiled kernel (see module doc)."""
    return _GeluGate.apply(_rows(a), _rows(b)).view(a.shape)
