// The gated FFN's middle, y = GELU(a) * b, forward and backward: one vectorised pass over the rows
// of a and b each way, GELU(a) recomputed in the backward instead of stored (layers/gelu_gate.py).
#include <torch/extension.h>
#include "bioxlstm_common.h"

#include <ATen/Parallel.h>
#include <cmath>
#include <vector>

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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", torch::wrap_pybind_function(forward), "forward");
  m.def("backward", torch::wrap_pybind_function(backward), "backward");
}
