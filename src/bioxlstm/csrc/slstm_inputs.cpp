// The sLSTM layer's input side: c = silu(causal depthwise conv(x)) and the scan's gate inputs
// wx = [W_i c; W_f c; W_z x; W_o x] (block-diagonal per head) in tiles of eight token rows, the
// head-sized products of several rows summed in registers at once; the backward in two passes
// (layers/slstm_inputs.py).
#include <torch/extension.h>
#include "bioxlstm_common.h"

#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <vector>

// x (B, S, D) rows; the conv state holds the K - 1 rows before each sequence; wt (K, D) is the
// conv weight transposed; W (4, NH, DH, DH) the gate blocks [gate][head][out][in].
template <typename T> struct In {
  int64_t B, S, D, K, NH, DH;
  const T *x, *state, *wt, *cb, *W;
  // the row at padded position j of sequence b (j < K - 1: the state)
  BX_INLINE const T* xrow(int64_t b, int64_t j) const {
    return j < K - 1 ? state + (b * (K - 1) + j) * D : x + (b * S + j - K + 1) * D;
  }
  // the conv's pre-activation at token (b, t) into u (D)
  BX_INLINE void conv(int64_t b, int64_t t, T* __restrict__ u) const {
    std::copy(cb, cb + D, u);
    for (int64_t k = 0; k < K; ++k) {
      const T* __restrict__ xr = xrow(b, t + k);
      const T* __restrict__ w = wt + k * D;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) u[d] += xr[d] * w[d];
    }
  }
};

// How many rows of N sums to hold in registers at once: as many as fit in half the vector
// registers (32 with AVX-512, else 16), at most 4. Independent rows share each load of a weight
// row and hide the FMA latency that a single row's chain of sums waits on. N = 0 (any size): 1.
template <typename T, int N> constexpr int kRegRows = [] {
  constexpr int regs = BX_VEC_BYTES == 64 ? 32 : 16;
  constexpr int per_row = (N * (int)sizeof(T) + BX_VEC_BYTES - 1) / BX_VEC_BYTES;
  const int fit = per_row > 0 ? regs / 2 / per_row : 1;
  return fit < 1 ? 1 : (fit > 4 ? 4 : fit);
}();

// out_r[0:N] (+)= sum_i in_r[i] M[i, 0:N] for R rows r (in + r * si, out + r * so) and a
// row-major N x N block M; the sums stay in registers.
template <typename T, int N, int R>
static BX_INLINE void vec_rows(const T* __restrict__ in, int64_t si, const T* __restrict__ M,
                               T* __restrict__ out, int64_t so, bool add) {
  T acc[R][N];
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < N; ++o) acc[r][o] = add ? out[r * so + o] : T(0);
  for (int i = 0; i < N; ++i) {
    const T* __restrict__ m = M + i * N;
    for (int r = 0; r < R; ++r) {
      const T a = in[r * si + i];
      for (int o = 0; o < N; ++o) acc[r][o] += a * m[o];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < N; ++o) out[r * so + o] = acc[r][o];
}

// The same for one row and any n.
template <typename T>
static BX_INLINE void vec_any(const T* __restrict__ in, const T* __restrict__ M, int64_t n,
                              T* __restrict__ out, bool add) {
  if (!add) std::fill(out, out + n, T(0));
  for (int64_t i = 0; i < n; ++i) {
    const T a = in[i];
    const T* __restrict__ m = M + i * n;
#pragma omp simd
    for (int64_t o = 0; o < n; ++o) out[o] += a * m[o];
  }
}

// out_r[0:n] (+)= sum_i in_r[i] M[i, 0:n] for rows r < rows: in register tiles of kRegRows
// rows when N = n is known at compile time (N = 0: any n, row by row).
template <typename T, int N>
static BX_INLINE void vec_block(const T* in, int64_t si, const T* M, int64_t n, T* out,
                                int64_t so, bool add, int64_t rows) {
  int64_t r = 0;
  if constexpr (N > 0) {
    constexpr int R = kRegRows<T, N>;
    for (; r + R <= rows; r += R) vec_rows<T, N, R>(in + r * si, si, M, out + r * so, so, add);
    for (; r < rows; ++r) vec_rows<T, N, 1>(in + r * si, si, M, out + r * so, so, add);
  } else {
    for (; r < rows; ++r) vec_any(in + r * si, M, n, out + r * so, add);
  }
}

constexpr int64_t kTile = 8;  // token rows per tile

// Rows [r0, r1) of the B * S tokens: c = silu(conv(x)) and wx, with WT the blocks transposed
// ([gate][head][in][out]) so each gate output is a sum of scaled rows.
template <typename T, int N>
static BX_INLINE void fwd_rows(const In<T>& p, const T* WT, T* c, T* wx, int64_t r0, int64_t r1) {
  const int64_t D = p.D, NH = p.NH, DH = p.DH;
  for (int64_t r = r0; r < r1; r += kTile) {
    const int64_t rows = std::min(r1 - r, kTile);
    for (int64_t j = r; j < r + rows; ++j) {
      T* __restrict__ cr = c + j * D;
      p.conv(j / p.S, j % p.S, cr);
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) cr[d] *= sigmoid(cr[d]);
    }
    for (int64_t g = 0; g < 4; ++g)
      for (int64_t h = 0; h < NH; ++h)
        vec_block<T, N>(((g < 2) ? c : p.x) + r * D + h * DH, D,
                        WT + (g * NH + h) * DH * DH, DH, wx + r * 4 * D + g * D + h * DH, 4 * D,
                        false, rows);
  }
}

// The gate blocks' gradient over rows [r0, r1): dW[g][h][o][:] += dwx[g][h][o] in[h][:], with
// in = c for i and f and x for z and o; each row of dW is updated for all the rows in turn.
template <typename T, int N>
static BX_INLINE void gate_weight_grads(const In<T>& p, const T* dwx, const T* c, T* dW,
                                        int64_t r0, int64_t r1) {
  const int64_t D = p.D, NH = p.NH, DH = p.DH;
  // rows o .. o + R - 1 of a block at once when N is known (R divides N), else one by one
  constexpr int64_t R = kRegRows<T, N>;
  for (int64_t g = 0; g < 4; ++g)
    for (int64_t h = 0; h < NH; ++h)
      for (int64_t o = 0; o < DH; o += R) {
        T* __restrict__ row = dW + ((g * NH + h) * DH + o) * DH;
        if constexpr (N > 0) {
          T acc[R][N];
          for (int j = 0; j < R; ++j)
            for (int i = 0; i < N; ++i) acc[j][i] = row[j * N + i];
          for (int64_t r = r0; r < r1; ++r) {
            const T* a = dwx + r * 4 * D + g * D + h * DH + o;
            const T* __restrict__ in = (g < 2 ? c : p.x) + r * D + h * DH;
            for (int j = 0; j < R; ++j)
              for (int i = 0; i < N; ++i) acc[j][i] += a[j] * in[i];
          }
          for (int j = 0; j < R; ++j)
            for (int i = 0; i < N; ++i) row[j * N + i] = acc[j][i];
        } else {
          for (int64_t r = r0; r < r1; ++r) {
            const T a = dwx[r * 4 * D + g * D + h * DH + o];
            const T* __restrict__ in = (g < 2 ? c : p.x) + r * D + h * DH;
#pragma omp simd
            for (int64_t i = 0; i < DH; ++i) row[i] += a * in[i];
          }
        }
      }
}

// First backward pass over rows [r0, r1): the conv output's gradient through the SiLU (dpre),
// the gates' direct share of dx, and into part the conv weight and bias gradients (K D + D)
// followed by the gate blocks' gradient (4 NH DH DH).
template <typename T, int N>
static BX_INLINE void bwd_rows(const In<T>& p, const T* dwx, const T* c, T* dpre, T* dx, T* part,
                               T* u, int64_t r0, int64_t r1) {
  const int64_t D = p.D, K = p.K, NH = p.NH, DH = p.DH;
  for (int64_t r0t = r0; r0t < r1; r0t += kTile) {  // one tile of rows while it is in cache
    const int64_t rows = std::min(r1 - r0t, kTile);
    gate_weight_grads<T, N>(p, dwx, c, part + (K + 1) * D, r0t, r0t + rows);
    const T* g = dwx + r0t * 4 * D;
    for (int64_t h = 0; h < NH; ++h) {
      const T* Wh = p.W + h * DH * DH;
      const int64_t gate = NH * DH * DH, o = h * DH, sg = 4 * D;
      vec_block<T, N>(g + o, sg, Wh, DH, dpre + r0t * D + o, D, false, rows);
      vec_block<T, N>(g + D + o, sg, Wh + gate, DH, dpre + r0t * D + o, D, true, rows);
      vec_block<T, N>(g + 2 * D + o, sg, Wh + 2 * gate, DH, dx + r0t * D + o, D, false, rows);
      vec_block<T, N>(g + 3 * D + o, sg, Wh + 3 * gate, DH, dx + r0t * D + o, D, true, rows);
    }
    for (int64_t r = r0t; r < r0t + rows; ++r) {
      const int64_t b = r / p.S, t = r % p.S;
      T* __restrict__ dp = dpre + r * D;
      p.conv(b, t, u);
      T* __restrict__ db = part + K * D;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) {
        const T s = sigmoid(u[d]);
        dp[d] *= s * (T(1) + u[d] * (T(1) - s));
        db[d] += dp[d];
      }
      for (int64_t k = 0; k < K; ++k) {
        const T* __restrict__ xr = p.xrow(b, t + k);
        T* __restrict__ dw = part + k * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) dw[d] += dp[d] * xr[d];
      }
    }
  }
}

// Second pass: the conv's input gradient at padded rows [j0, j1) of sequence b, added to dx
// (or written to dstate for the state rows): row j feeds tokens t = j - k for each tap k.
template <typename T>
BX_CLONES static void conv_input_grad(const In<T>& p, const T* dpre, T* dx, T* dstate, int64_t b,
                                      int64_t j0, int64_t j1) {
  const int64_t D = p.D, K = p.K, S = p.S;
  for (int64_t j = j0; j < j1; ++j) {
    T* __restrict__ out = j < K - 1 ? dstate + (b * (K - 1) + j) * D : dx + (b * S + j - K + 1) * D;
    if (j < K - 1) std::fill(out, out + D, T(0));
    for (int64_t k = 0; k < K; ++k) {
      const int64_t t = j - k;
      if (t < 0 || t >= S) continue;
      const T* __restrict__ dp = dpre + (b * S + t) * D;
      const T* __restrict__ w = p.wt + k * D;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) out[d] += dp[d] * w[d];
    }
  }
}

// Entry points per dtype, each built for every target in BX_CLONES; heads of 16, 32 or 64 take
// the register-resident forms.
#define BX_ENTRY(T)                                                                             \
  BX_CLONES static void fwd(const In<T>& p, const T* WT, T* c, T* wx, int64_t r0, int64_t r1) { \
    switch (p.DH) {                                                                             \
      case 16: fwd_rows<T, 16>(p, WT, c, wx, r0, r1); break;                                    \
      case 32: fwd_rows<T, 32>(p, WT, c, wx, r0, r1); break;                                    \
      case 64: fwd_rows<T, 64>(p, WT, c, wx, r0, r1); break;                                    \
      default: fwd_rows<T, 0>(p, WT, c, wx, r0, r1);                                            \
    }                                                                                           \
  }                                                                                             \
  BX_CLONES static void bwd(const In<T>& p, const T* dwx, const T* c, T* dpre, T* dx, T* part,   \
                            T* u, int64_t r0, int64_t r1) {                                     \
    switch (p.DH) {                                                                             \
      case 16: bwd_rows<T, 16>(p, dwx, c, dpre, dx, part, u, r0, r1); break;                    \
      case 32: bwd_rows<T, 32>(p, dwx, c, dpre, dx, part, u, r0, r1); break;                    \
      case 64: bwd_rows<T, 64>(p, dwx, c, dpre, dx, part, u, r0, r1); break;                    \
      default: bwd_rows<T, 0>(p, dwx, c, dpre, dx, part, u, r0, r1);                            \
    }                                                                                           \
  }
BX_ENTRY(float)
BX_ENTRY(double)

template <typename T>
static In<T> inputs(const at::Tensor& x, const at::Tensor& state, const at::Tensor& wt,
                    const at::Tensor& cb, const at::Tensor& W) {
  return In<T>{x.size(0), x.size(1), x.size(2), wt.size(0), W.size(1), W.size(2),
               x.data_ptr<T>(), state.data_ptr<T>(), wt.data_ptr<T>(), cb.data_ptr<T>(),
               W.data_ptr<T>()};
}

// c (B, S, D) and wx (B, S, 4, NH, DH) from x (B, S, D), state (B, K - 1, D), wt (K, D), cb (D)
// and the gate blocks W (4, NH, DH, DH).
std::vector<at::Tensor> forward(at::Tensor x, at::Tensor state, at::Tensor wt, at::Tensor cb,
                                at::Tensor W) {
  const int64_t B = x.size(0), S = x.size(1), D = x.size(2), NH = W.size(1), DH = W.size(2);
  auto c = at::empty({B, S, D}, x.options());
  auto wx = at::empty({B, S, 4, NH, DH}, x.options());
  auto WT = W.transpose(2, 3).contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "slstm_input_forward", [&] {
    const auto p = inputs<scalar_t>(x, state, wt, cb, W);
    const scalar_t* wtp = WT.data_ptr<scalar_t>();
    scalar_t *cp = c.data_ptr<scalar_t>(), *wp = wx.data_ptr<scalar_t>();
    at::parallel_for(0, B * S, 16, [&](int64_t r0, int64_t r1) {
      fwd(p, wtp, cp, wp, r0, r1);
    });
  });
  return {c, wx};
}

// dx, dstate, dwt (K, D), dcb and dW (4, NH, DH, DH) from dwx, with c from the forward.
std::vector<at::Tensor> backward(at::Tensor dwx, at::Tensor x, at::Tensor c, at::Tensor state,
                                 at::Tensor wt, at::Tensor cb, at::Tensor W) {
  const int64_t B = x.size(0), S = x.size(1), D = x.size(2), K = wt.size(0);
  const int64_t width = (K + 1) * D + W.numel();
  auto dx = at::empty({B, S, D}, x.options()), dpre = at::empty({B, S, D}, x.options());
  auto dstate = at::empty({B, K - 1, D}, x.options());
  auto part = at::zeros({at::get_num_threads(), width}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "slstm_input_backward", [&] {
    using T = scalar_t;
    const auto p = inputs<T>(x, state, wt, cb, W);
    const T *g = dwx.data_ptr<T>(), *cp = c.data_ptr<T>();
    T *dp = dpre.data_ptr<T>(), *dxp = dx.data_ptr<T>(), *pp = part.data_ptr<T>();
    T* dsp = dstate.data_ptr<T>();
    at::parallel_for(0, B * S, 16, [&](int64_t r0, int64_t r1) {
      std::vector<T> u(D);
      bwd(p, g, cp, dp, dxp, pp + at::get_thread_num() * width, u.data(), r0, r1);
    });
    const int64_t rows = S + K - 1;
    at::parallel_for(0, B * rows, 16, [&](int64_t s, int64_t e) {
      for (int64_t u = s; u < e;) {
        const int64_t b = u / rows, j0 = u % rows, j1 = std::min(rows, j0 + (e - u));
        conv_input_grad<T>(p, dp, dxp, dsp, b, j0, j1);
        u += j1 - j0;
      }
    });
  });
  auto sums = part.sum(0);
  return {dx, dstate, sums.narrow(0, 0, K * D).view({K, D}), sums.narrow(0, K * D, D),
          sums.narrow(0, (K + 1) * D, W.numel()).view(W.sizes())};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", torch::wrap_pybind_function(forward), "forward");
  m.def("backward", torch::wrap_pybind_function(backward), "backward");
}
