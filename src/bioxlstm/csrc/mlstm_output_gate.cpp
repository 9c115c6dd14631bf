// The mLSTM layer's output gate, y = (LN_heads(h) * (1 + w) + skip * c) * silu(z) on token rows:
// one vectorised pass forward and one backward, the per-(row, head) mean and reciprocal deviation
// kept for the backward (layers/mlstm_output_gate.py).
#include <torch/extension.h>
#include "bioxlstm_common.h"

#include <ATen/Parallel.h>
#include <cmath>
#include <vector>

// N rows of width D = NH * DH; h, c, z may have row strides (z is half of the up-projection).
template <typename T> struct Gate {
  int64_t N, D, NH;
  const T *h, *c, *z, *w, *skip; int64_t sh, sc, sz;
  T eps;
};

template <typename T>
BX_INLINE void forward_rows(const Gate<T>& p, T* y, T* mean, T* rstd, int64_t begin,
                            int64_t end) {
  const int64_t D = p.D, DH = D / p.NH;
  const T *w = p.w, *skip = p.skip;
  for (int64_t r = begin; r < end; ++r) {
    const T *hr = p.h + r * p.sh, *cr = p.c + r * p.sc, *zr = p.z + r * p.sz;
    T* yr = y + r * D;
    for (int64_t g = 0; g < p.NH; ++g) {
      const int64_t o = g * DH;
      T mu = 0, var = 0;
#pragma omp simd reduction(+ : mu)
      for (int64_t e = 0; e < DH; ++e) mu += hr[o + e];
      mu /= T(DH);
#pragma omp simd reduction(+ : var)
      for (int64_t e = 0; e < DH; ++e) var += (hr[o + e] - mu) * (hr[o + e] - mu);
      const T rs = T(1) / std::sqrt(var / T(DH) + p.eps);
      mean[r * p.NH + g] = mu;
      rstd[r * p.NH + g] = rs;
#pragma omp simd
      for (int64_t e = o; e < o + DH; ++e) {
        const T gv = (hr[e] - mu) * rs * (T(1) + w[e]) + skip[e] * cr[e];
        yr[e] = gv * zr[e] / (T(1) + std::exp(-zr[e]));
      }
    }
  }
}

// dh, dc, dz (N, D); per-thread sums of dw and dskip into part (2 D); buf holds 2 DH scratch.
template <typename T>
BX_INLINE void backward_rows(const Gate<T>& p, const T* dy, int64_t sdy, const T* mean,
                             const T* rstd, T* dh, T* dc, T* dz, T* part, T* buf, int64_t begin,
                             int64_t end) {
  const int64_t D = p.D, DH = D / p.NH;
  const T *w = p.w, *skip = p.skip;  // locals: stores in the loops could alias p's fields
  T *dw = part, *dskip = part + D, *xh = buf, *dxh = buf + DH;
  for (int64_t r = begin; r < end; ++r) {
    const T *hr = p.h + r * p.sh, *cr = p.c + r * p.sc, *zr = p.z + r * p.sz, *gr = dy + r * sdy;
    T *dhr = dh + r * D, *dcr = dc + r * D, *dzr = dz + r * D;
    for (int64_t g = 0; g < p.NH; ++g) {
      const int64_t o = g * DH;
      const T mu = mean[r * p.NH + g], rs = rstd[r * p.NH + g];
      T s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
      for (int64_t e = 0; e < DH; ++e) {
        const int64_t d = o + e;
        const T x = (hr[d] - mu) * rs, sig = sigmoid(zr[d]);
        const T gv = x * (T(1) + w[d]) + skip[d] * cr[d];
        const T dg = gr[d] * zr[d] * sig;
        dzr[d] = gr[d] * gv * sig * (T(1) + zr[d] * (T(1) - sig));
        dskip[d] += dg * cr[d];
        dcr[d] = dg * skip[d];
        dw[d] += dg * x;
        xh[e] = x;
        dxh[e] = dg * (T(1) + w[d]);
        s1 += dxh[e];
        s2 += dxh[e] * x;
      }
      s1 /= T(DH);
      s2 /= T(DH);
#pragma omp simd
      for (int64_t e = 0; e < DH; ++e) dhr[o + e] = rs * (dxh[e] - s1 - xh[e] * s2);
    }
  }
}

#define BX_ENTRY(T)                                                                           \
  BX_CLONES static void fwd(const Gate<T>& p, T* y, T* m, T* s, int64_t b, int64_t e) {       \
    forward_rows<T>(p, y, m, s, b, e);                                                        \
  }                                                                                           \
  BX_CLONES static void bwd(const Gate<T>& p, const T* dy, int64_t sdy, const T* m,           \
                            const T* s, T* dh, T* dc, T* dz, T* part, T* buf, int64_t b,      \
                            int64_t e) {                                                      \
    backward_rows<T>(p, dy, sdy, m, s, dh, dc, dz, part, buf, b, e);                          \
  }
BX_ENTRY(float)
BX_ENTRY(double)

template <typename T>
static Gate<T> gate(const at::Tensor& h, const at::Tensor& c, const at::Tensor& z,
                    const at::Tensor& w, const at::Tensor& skip, int64_t NH, double eps) {
  return {h.size(0), h.size(1), NH, h.data_ptr<T>(), c.data_ptr<T>(), z.data_ptr<T>(),
          w.data_ptr<T>(), skip.data_ptr<T>(), h.stride(0), c.stride(0), z.stride(0), T(eps)};
}

// h, c, z (N, D) with unit stride in D; w, skip (D). Returns y (N, D), mean and rstd (N, NH).
std::vector<at::Tensor> forward(at::Tensor h, at::Tensor c, at::Tensor z, at::Tensor w,
                                at::Tensor skip, int64_t NH, double eps) {
  const int64_t N = h.size(0), D = h.size(1);
  auto y = at::empty({N, D}, h.options());
  auto mean = at::empty({N, NH}, h.options()), rstd = at::empty({N, NH}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "mlstm_output_forward", [&] {
    const auto p = gate<scalar_t>(h, c, z, w, skip, NH, eps);
    scalar_t *yp = y.data_ptr<scalar_t>(), *mp = mean.data_ptr<scalar_t>();
    scalar_t* rp = rstd.data_ptr<scalar_t>();
    at::parallel_for(0, N, 16, [&](int64_t b, int64_t e) { fwd(p, yp, mp, rp, b, e); });
  });
  return {y, mean, rstd};
}

// Gradients of forward: dh, dc, dz (N, D), dw, dskip (D).
std::vector<at::Tensor> backward(at::Tensor dy, at::Tensor h, at::Tensor c, at::Tensor z,
                                 at::Tensor w, at::Tensor skip, at::Tensor mean, at::Tensor rstd,
                                 double eps) {
  const int64_t N = h.size(0), D = h.size(1), NH = mean.size(1);
  auto dh = at::empty({N, D}, h.options()), dc = at::empty({N, D}, h.options());
  auto dz = at::empty({N, D}, h.options());
  auto part = at::zeros({at::get_num_threads(), 2 * D}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "mlstm_output_backward", [&] {
    using T = scalar_t;
    const auto p = gate<T>(h, c, z, w, skip, NH, eps);
    const T *gp = dy.data_ptr<T>(), *mp = mean.data_ptr<T>(), *rp = rstd.data_ptr<T>();
    T *dhp = dh.data_ptr<T>(), *dcp = dc.data_ptr<T>(), *dzp = dz.data_ptr<T>();
    T* pp = part.data_ptr<T>();
    at::parallel_for(0, N, 16, [&](int64_t b, int64_t e) {
      std::vector<T> buf(2 * (D / NH));
      bwd(p, gp, dy.stride(0), mp, rp, dhp, dcp, dzp, pp + at::get_thread_num() * 2 * D,
          buf.data(), b, e);
    });
  });
  auto sums = part.sum(0);
  return {dh, dc, dz, sums.narrow(0, 0, D), sums.narrow(0, D, D)};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", torch::wrap_pybind_function(forward), "forward");
  m.def("backward", torch::wrap_pybind_function(backward), "backward");
}
