// The mLSTM layer's input side, one token row at a time while the row is in cache:
// c = silu(causal depthwise conv(x_m)), q = BD_q(c), k = BD_k(c), v = BD_v(x_m) with small
// block-diagonal weights, and the gate pre-activations [i; f] = W_g [q; k; v] + b_g; the backward
// in one pass, each row's conv input gradient added K - 1 rows later from a ring of K rows
// (layers/mlstm_inputs.py).
#include <torch/extension.h>
#include "bioxlstm_common.h"

#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

// For blocks of 4, rotations of a Vec within each group of 4 lanes: rot<s>(y) holds
// y[4 g + (j + s) % 4] in lane 4 g + j.
template <typename M, int s, int... j> constexpr M rot_mask(std::integer_sequence<int, j...>) {
  return M{((j & ~3) + ((j + s) & 3))...};
}
template <int s, typename V> BX_INLINE V rot(V y) {
  using M = decltype(y < y);  // the integer vector of the same shape
  return __builtin_shuffle(y, rot_mask<M, s>(std::make_integer_sequence<int, sizeof(V) / sizeof(y[0])>{}));
}

// Shapes and pointers shared by both directions. x (B, S, D) may be a row-strided view (half of
// the up-projection); the conv state is the K - 1 rows before x; wt is the conv weight as (K, D);
// BD weights are (D / bs, bs, bs); Wg (G, 3 D) with G = 2 NH gate rows: i of each head, then f.
template <typename T> struct In {
  int64_t B, S, D, K, bs, NH;
  const T *x; int64_t sxb, sxs;
  const T *state, *wt, *cb, *Wq, *Wk, *Wv, *Wg, *bg;
  // the row of the conv's padded input at padded position j of sequence b
  BX_INLINE const T* xrow(int64_t b, int64_t j) const {
    return j < K - 1 ? state + (b * (K - 1) + j) * D : x + b * sxb + (j - K + 1) * sxs;
  }
  // index of gate g of token (b, t) in the (2, B, NH, S) gate layout
  BX_INLINE int64_t gate_at(int64_t g, int64_t b, int64_t t) const {
    return (((g / NH) * B + b) * NH + g % NH) * S + t;
  }
  // pre-activation of the conv at token (b, t) into acc (D), each vector summed in a register
  BX_INLINE void conv(int64_t b, int64_t t, T* acc) const {
    using V = Vec<T>;
    int64_t d = 0;
    for (; d + kLanes<T> <= D; d += kLanes<T>) {
      V s = vload(cb + d);
      for (int64_t k = 0; k < K; ++k) s += vload(xrow(b, t + k) + d) * vload(wt + k * D + d);
      vstore(acc + d, s);
    }
    for (; d < D; ++d) {
      T s = cb[d];
      for (int64_t k = 0; k < K; ++k) s += xrow(b, t + k)[d] * wt[k * D + d];
      acc[d] = s;
    }
  }
};

// Blocks of 4 as four diagonals, so every lane does useful work: out = sum_s rot<s>(y) * Wd[s]
// with Wd (4, D) laid out by `diagonals` for the product wanted; D a multiple of 8.
template <typename T>
BX_INLINE void bd4(const T* y, const T* Wd, T* out, int64_t D, bool add) {
  using V = Vec<T>;
  for (int64_t d = 0; d < D; d += kLanes<T>) {
    const V y0 = vload(y + d);
    V acc = y0 * vload(Wd + d) + rot<1>(y0) * vload(Wd + D + d) +
            rot<2>(y0) * vload(Wd + 2 * D + d) + rot<3>(y0) * vload(Wd + 3 * D + d);
    if (add) acc += vload(out + d);
    vstore(out + d, acc);
  }
}
// Ad[s] += rot<s>(dy) * x: the weight gradient of a block-4 map as four diagonals, which
// `from_diagonals` maps back to (D / 4, 4, 4).
template <typename T>
BX_INLINE void bd4_outer(const T* dy, const T* x, T* Ad, int64_t D) {
  using V = Vec<T>;
  for (int64_t d = 0; d < D; d += kLanes<T>) {
    const V y0 = vload(dy + d), xv = vload(x + d);
    vstore(Ad + d, vload(Ad + d) + y0 * xv);
    vstore(Ad + D + d, vload(Ad + D + d) + rot<1>(y0) * xv);
    vstore(Ad + 2 * D + d, vload(Ad + 2 * D + d) + rot<2>(y0) * xv);
    vstore(Ad + 3 * D + d, vload(Ad + 3 * D + d) + rot<3>(y0) * xv);
  }
}

// y = BD(x): y[g bs + o] = sum_i x[g bs + i] W[g, o, i], from Wt[g, i, o] (W transposed per
// block) as rows of Wt times a scalar; blocks of 4 go to `bd4` with Wt as diagonals.
template <typename T, int64_t BS>
BX_INLINE void bd(const T* x, const T* Wt, T* y, int64_t D, int64_t rbs) {
  if constexpr (BS == 4) return bd4(x, Wt, y, D, false);
  const int64_t bs = BS ? BS : rbs;
  T out[BS ? BS : 64];  // MAX_BLOCK on the Python side
  for (int64_t g = 0; g < D / bs; ++g) {
    const T *xg = x + g * bs, *Wg = Wt + g * bs * bs;
    for (int64_t o = 0; o < bs; ++o) out[o] = T(0);
    for (int64_t i = 0; i < bs; ++i)
      for (int64_t o = 0; o < bs; ++o) out[o] += xg[i] * Wg[i * bs + o];
    for (int64_t o = 0; o < bs; ++o) y[g * bs + o] = out[o];
  }
}

// dx (+)= BD^T(dy), and dW[g, o, i] += dy[g bs + o] x[g bs + i] unless dW is null. Written as
// rows of W times a scalar; blocks of 4 go to `bd4` and `bd4_outer`, W and dW as diagonals.
template <typename T, int64_t BS>
BX_INLINE void bd_grad(const T* dy, const T* x, const T* W, T* dx, T* dW, bool add, int64_t D,
                       int64_t rbs) {
  if constexpr (BS == 4) {
    bd4(dy, W, dx, D, add);
    if (dW) bd4_outer(dy, x, dW, D);
    return;
  }
  const int64_t bs = BS ? BS : rbs;
  T out[BS ? BS : 64];  // MAX_BLOCK on the Python side
  for (int64_t g = 0; g < D / bs; ++g) {
    const T *dyg = dy + g * bs, *xg = x + g * bs, *Wg = W + g * bs * bs;
    T* dxg = dx + g * bs;
    for (int64_t i = 0; i < bs; ++i) out[i] = add ? dxg[i] : T(0);
    for (int64_t o = 0; o < bs; ++o)
      for (int64_t i = 0; i < bs; ++i) out[i] += dyg[o] * Wg[o * bs + i];
    for (int64_t i = 0; i < bs; ++i) dxg[i] = out[i];
    if (!dW) continue;
    T* dWg = dW + g * bs * bs;
    for (int64_t o = 0; o < bs; ++o)
      for (int64_t i = 0; i < bs; ++i) dWg[o * bs + i] += dyg[o] * xg[i];
  }
}

// Gate pre-activations of R consecutive token rows (r0 ..): each gate's weights are loaded once
// for all R rows, since the gates' 2 NH x 3 D weights do not stay in L1 beside a row's data.
template <typename T, int R>
BX_INLINE void gate_rows(const In<T>& p, const T* q, const T* k, const T* v, int64_t r0,
                         T* gates) {
  using V = Vec<T>;
  const int64_t D = p.D, G = 2 * p.NH;
  for (int64_t g = 0; g < G; ++g) {
    const T* w = p.Wg + g * 3 * D;
    V acc[R];
    for (int r = 0; r < R; ++r) acc[r] = V{};
    int64_t d = 0;
    for (; d + kLanes<T> <= D; d += kLanes<T>) {
      const V w0 = vload(w + d), w1 = vload(w + D + d), w2 = vload(w + 2 * D + d);
      for (int r = 0; r < R; ++r)
        acc[r] += w0 * vload(q + r * D + d) + w1 * vload(k + r * D + d) + w2 * vload(v + r * D + d);
    }
    for (int r = 0; r < R; ++r) {
      T s = 0;
      for (int64_t l = 0; l < kLanes<T>; ++l) s += acc[r][l];
      const T *qr = q + r * D, *kr = k + r * D, *vr = v + r * D;
      for (int64_t e = d; e < D; ++e) s += w[e] * qr[e] + w[D + e] * kr[e] + w[2 * D + e] * vr[e];
      const int64_t row = r0 + r;
      gates[p.gate_at(g, row / p.S, row % p.S)] = p.bg[g] + s;
    }
  }
}

template <typename T, int64_t BS>
BX_INLINE void forward_rows(const In<T>& p, T* c, T* q, T* k, T* v, T* gates, int64_t begin,
                            int64_t end) {
  const int64_t D = p.D;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t b = r / p.S, t = r % p.S;
    T *cr = c + r * D, *qr = q + r * D, *kr = k + r * D, *vr = v + r * D;
    p.conv(b, t, cr);
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) cr[d] = silu(cr[d]);
    bd<T, BS>(cr, p.Wq, qr, D, p.bs);
    bd<T, BS>(cr, p.Wk, kr, D, p.bs);
    bd<T, BS>(p.xrow(b, t + p.K - 1), p.Wv, vr, D, p.bs);
    const int64_t done = r + 1 - begin;
    if (done % 4 == 0) gate_rows<T, 4>(p, qr - 3 * D, kr - 3 * D, vr - 3 * D, r - 3, gates);
  }
  for (int64_t r = end - (end - begin) % 4; r < end; ++r)
    gate_rows<T, 1>(p, q + r * D, k + r * D, v + r * D, r, gates);
}

// Gradients arriving: dc (from c's own uses), dq, dk, dv (row strides), dgates.
template <typename T> struct Grad {
  const T *dc; int64_t sdc;
  const T *dq, *dk, *dv; int64_t sdq, sdk, sdv;
  const T *dgates;
  T *dx, *dstate;
};

// Rows per pass of `gate_grads`: they share each load of the gates' weights.
constexpr int kGateRows = 4;

// For rows t .. t + R - 1 of sequence b, out[r] = [dq; dk; dv] of row t + r plus the gates' share
// sum_g dgate[g] Wg[g], each (3 D); every sum stays in a register while all gates are added, and
// the R rows share each load of Wg. gr is scratch for R x G gate gradients.
template <typename T, int R>
BX_INLINE void gate_grads(const In<T>& p, const Grad<T>& a, int64_t b, int64_t t, T* gr, T* out) {
  using V = Vec<T>;
  const int64_t D = p.D, G = 2 * p.NH, row = b * p.S + t;
  for (int r = 0; r < R; ++r)
    for (int64_t g = 0; g < G; ++g) gr[r * G + g] = a.dgates[p.gate_at(g, b, t + r)];
  const T* src[R][3];
  for (int r = 0; r < R; ++r) {
    src[r][0] = a.dq + (row + r) * a.sdq;
    src[r][1] = a.dk + (row + r) * a.sdk;
    src[r][2] = a.dv + (row + r) * a.sdv;
  }
  int64_t d = 0;
  for (; d + kLanes<T> <= D; d += kLanes<T>) {
    V acc[R][3];
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < 3; ++j) acc[r][j] = vload(src[r][j] + d);
    for (int64_t g = 0; g < G; ++g) {
      const T* w = p.Wg + g * 3 * D + d;
      const V w0 = vload(w), w1 = vload(w + D), w2 = vload(w + 2 * D);
      for (int r = 0; r < R; ++r) {
        const T gg = gr[r * G + g];
        acc[r][0] += gg * w0;
        acc[r][1] += gg * w1;
        acc[r][2] += gg * w2;
      }
    }
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < 3; ++j) vstore(out + r * 3 * D + j * D + d, acc[r][j]);
  }
  for (; d < D; ++d)
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < 3; ++j) {
        T sum = src[r][j][d];
        for (int64_t g = 0; g < G; ++g) sum += gr[r * G + g] * p.Wg[g * 3 * D + j * D + d];
        out[r * 3 * D + j * D + d] = sum;
      }
}

// One token row (b, t), given its total q/k/v gradients tg (3 D) from `gate_grads`: BD^T of q
// and k into dc, and the conv pre-activation gradient into pre. With part (not a halo row) also
// dx = BD_v^T(dv) and the weight sums: dWq, dWk, dWv (D bs each), dw (K, D), dbias (D).
template <typename T, int64_t BS>
BX_INLINE void row_grad(const In<T>& p, const Grad<T>& a, int64_t b, int64_t t, const T* tg,
                        T* pre, T* part, T* buf) {
  const int64_t D = p.D, K = p.K, bs = BS ? BS : p.bs, r = b * p.S + t;
  const T *tq = tg, *tk = tg + D, *tv = tg + 2 * D;
  T *acc = buf, *cv = buf + D, *dcr = buf + 2 * D;
  T *dWq = nullptr, *dWk = nullptr;
  if (part) { dWq = part; dWk = part + D * bs; }
  p.conv(b, t, acc);
#pragma omp simd
  for (int64_t d = 0; d < D; ++d) {
    const T sig = sigmoid(acc[d]);
    cv[d] = acc[d] * sig;
    pre[d] = sig * (T(1) + acc[d] * (T(1) - sig));  // silu'(acc), times dc below
  }
  const T* dcin = a.dc + r * a.sdc;
#pragma omp simd
  for (int64_t d = 0; d < D; ++d) dcr[d] = dcin[d];
  bd_grad<T, BS>(tq, cv, p.Wq, dcr, dWq, true, D, bs);
  bd_grad<T, BS>(tk, cv, p.Wk, dcr, dWk, true, D, bs);
#pragma omp simd
  for (int64_t d = 0; d < D; ++d) pre[d] *= dcr[d];
  if (!part) return;
  bd_grad<T, BS>(tv, p.xrow(b, t + K - 1), p.Wv, a.dx + r * D, part + 2 * D * bs, false, D, bs);
  T *dw = part + 3 * D * bs, *db = dw + K * D;
#pragma omp simd
  for (int64_t d = 0; d < D; ++d) db[d] += pre[d];
  for (int64_t k = 0; k < K; ++k) {
    const T* xk = p.xrow(b, t + k);
    T* dwk = dw + k * D;
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) dwk[d] += pre[d] * xk[d];
  }
}

// Rows [s0, s1) of sequence b in order. Row s's conv input gradient,
// dx[s] += sum_k w[k] pre[s + K - 1 - k], is added K - 1 rows later, when the pre rows it needs
// are in a ring of K rows; the K - 1 rows after s1 are computed for that alone (a halo, no
// sums). The segment at 0 also gives dstate.
template <typename T, int64_t BS>
BX_INLINE void backward_segment(const In<T>& p, const Grad<T>& a, int64_t b, int64_t s0,
                                int64_t s1, T* part, T* buf, T* ring) {
  const int64_t D = p.D, K = p.K, S = p.S;
  const int64_t end = std::min(S, s1 + K - 1);
  T *gr = buf + 3 * D, *tg = gr + kGateRows * 2 * p.NH;
  for (int64_t t = s0; t < s1 + K - 1; ++t) {
    const int64_t slot = (t - s0) % kGateRows;
    if (t < S && slot == 0) {
      if (t + kGateRows <= end) gate_grads<T, kGateRows>(p, a, b, t, gr, tg);
      else for (int64_t u = t; u < end; ++u) gate_grads<T, 1>(p, a, b, u, gr, tg + (u - t) * 3 * D);
    }
    if (t < S)
      row_grad<T, BS>(p, a, b, t, tg + slot * 3 * D, ring + (t % K) * D, t < s1 ? part : nullptr,
                      buf);
    const int64_t s = t - K + 1;
    if (s >= s0) {
      T* dxr = a.dx + (b * S + s) * D;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t u = s + K - 1 - k;
        if (u >= S) continue;
        const T *wk = p.wt + k * D, *pr = ring + (u % K) * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) dxr[d] += wk[d] * pr[d];
      }
    }
    if (s0 > 0 || t != K - 2) continue;
    for (int64_t j = 0; j < K - 1; ++j) {  // state row j collects w[k] pre[j - k]
      T* out = a.dstate + (b * (K - 1) + j) * D;
      std::fill(out, out + D, T(0));
      for (int64_t k = 0; k <= j; ++k) {
        if (j - k >= S) continue;
        const T *wk = p.wt + k * D, *pr = ring + ((j - k) % K) * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) out[d] += wk[d] * pr[d];
      }
    }
  }
}

// Rows per backward task: long enough that the K - 1 recomputed halo rows cost little.
constexpr int64_t kSegment = 256;

// Blocks of 4 take the four-diagonal path (`bd4`) when D is a whole number of vectors.
template <typename T> static bool diagonal_path(int64_t bs, int64_t D) {
  return bs == 4 && D % kLanes<T> == 0;
}

// Entry points per dtype and block size, each built for every target in BX_CLONES.
#define BX_ENTRY(T)                                                                           \
  BX_CLONES static void fwd(const In<T>& p, T* c, T* q, T* k, T* v, T* g, int64_t s,         \
                            int64_t e) {                                                      \
    if (diagonal_path<T>(p.bs, p.D)) forward_rows<T, 4>(p, c, q, k, v, g, s, e);                 \
    else forward_rows<T, 0>(p, c, q, k, v, g, s, e);                                          \
  }                                                                                           \
  BX_CLONES static void bwd(const In<T>& p, const Grad<T>& a, int64_t b, int64_t s0,           \
                            int64_t s1, T* part, T* buf, T* ring) {                           \
    if (diagonal_path<T>(p.bs, p.D)) backward_segment<T, 4>(p, a, b, s0, s1, part, buf, ring);    \
    else backward_segment<T, 0>(p, a, b, s0, s1, part, buf, ring);                             \
  }
BX_ENTRY(float)
BX_ENTRY(double)

// Block-4 weights W (D / 4, 4, 4) as four diagonals (4, D) for `bd4`: for the forward product
// Wd[s][4 g + j] = W[g, j, (j + s) % 4], for the transposed one W[g, (j + s) % 4, j].
template <typename T> static at::Tensor diagonals(const at::Tensor& W, bool transposed) {
  const int64_t D = 4 * W.size(0);
  auto out = at::empty({4, D}, W.options());
  const T* w = W.data_ptr<T>();
  T* o = out.data_ptr<T>();
  for (int64_t s = 0; s < 4; ++s)
    for (int64_t g = 0; g < D / 4; ++g)
      for (int64_t j = 0; j < 4; ++j) {
        const int64_t r = (j + s) & 3;
        o[s * D + 4 * g + j] = transposed ? w[(g * 4 + r) * 4 + j] : w[(g * 4 + j) * 4 + r];
      }
  return out;
}
// The weight gradient from its diagonals Ad (4, D) (`bd4_outer`): dW[g, (j + s) % 4, j].
template <typename T> static at::Tensor from_diagonals(const at::Tensor& Ad) {
  const int64_t D = Ad.size(1);
  auto dW = at::empty({D / 4, 4, 4}, Ad.options());
  const T* a = Ad.data_ptr<T>();
  T* w = dW.data_ptr<T>();
  for (int64_t s = 0; s < 4; ++s)
    for (int64_t g = 0; g < D / 4; ++g)
      for (int64_t j = 0; j < 4; ++j) w[(g * 4 + ((j + s) & 3)) * 4 + j] = a[s * D + 4 * g + j];
  return dW;
}

template <typename T>
static In<T> inputs(const at::Tensor& x, const at::Tensor& state, const at::Tensor& wt,
                    const at::Tensor& cb, const at::Tensor& Wq, const at::Tensor& Wk,
                    const at::Tensor& Wv, const at::Tensor& Wg, const at::Tensor& bg,
                    int64_t bs, int64_t NH) {
  return {x.size(0), x.size(1), x.size(2), wt.size(0), bs, NH,
          x.data_ptr<T>(), x.stride(0), x.stride(1), state.data_ptr<T>(), wt.data_ptr<T>(),
          cb.data_ptr<T>(), Wq.data_ptr<T>(), Wk.data_ptr<T>(), Wv.data_ptr<T>(),
          Wg.data_ptr<T>(), bg.data_ptr<T>()};
}

// x (B, S, D) unit stride in D; state (B, K - 1, D), wt (K, D), cb (D), Wq/Wk/Wv (D / bs, bs, bs),
// Wg (2 NH, 3 D), bg (2 NH), all contiguous. Returns c, q, k, v (B, S, D), gates (2, B, NH, S).
std::vector<at::Tensor> forward(at::Tensor x, at::Tensor state, at::Tensor wt, at::Tensor cb,
                                at::Tensor Wq, at::Tensor Wk, at::Tensor Wv, at::Tensor Wg,
                                at::Tensor bg, int64_t NH) {
  const int64_t B = x.size(0), S = x.size(1), D = x.size(2);
  auto c = at::empty({B, S, D}, x.options()), q = at::empty_like(c), k = at::empty_like(c);
  auto v = at::empty_like(c), gates = at::empty({2, B, NH, S}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mlstm_input_forward", [&] {
    using T = scalar_t;
    // the forward reads the blocks transposed, or as diagonals
    const bool diag = diagonal_path<T>(Wq.size(1), D);
    const auto layout = [&](const at::Tensor& W) {
      return diag ? diagonals<T>(W, false) : W.transpose(1, 2).contiguous();
    };
    const auto Wqt = layout(Wq), Wkt = layout(Wk), Wvt = layout(Wv);
    const auto p = inputs<T>(x, state, wt, cb, Wqt, Wkt, Wvt, Wg, bg, Wq.size(1), NH);
    T *cp = c.data_ptr<T>(), *qp = q.data_ptr<T>(), *kp = k.data_ptr<T>();
    T *vp = v.data_ptr<T>(), *gp = gates.data_ptr<T>();
    at::parallel_for(0, B * S, 16, [&](int64_t s, int64_t e) { fwd(p, cp, qp, kp, vp, gp, s, e); });
  });
  return {c, q, k, v, gates};
}

// Gradients of forward, less those of Wg and bg (one BLAS product on the Python side): dx, dstate,
// dw (K, D) (transposed like wt), dbias, dWq, dWk, dWv.
std::vector<at::Tensor> backward(at::Tensor dc, at::Tensor dq, at::Tensor dk, at::Tensor dv,
                                 at::Tensor dgates, at::Tensor x, at::Tensor state, at::Tensor wt,
                                 at::Tensor cb, at::Tensor Wq, at::Tensor Wk, at::Tensor Wv,
                                 at::Tensor Wg, at::Tensor bg, int64_t NH) {
  const int64_t B = x.size(0), S = x.size(1), D = x.size(2), K = wt.size(0), bs = Wq.size(1);
  auto dx = at::empty({B, S, D}, x.options()), dstate = at::empty({B, K - 1, D}, x.options());
  const int64_t width = 3 * D * bs + (K + 1) * D, segs = (S + kSegment - 1) / kSegment;
  auto part = at::zeros({at::get_num_threads(), width}, x.options());
  bool diag = false;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mlstm_input_backward", [&] {
    using T = scalar_t;
    diag = diagonal_path<T>(bs, D);
    const auto layout = [&](const at::Tensor& W) { return diag ? diagonals<T>(W, true) : W; };
    const auto Wqd = layout(Wq), Wkd = layout(Wk), Wvd = layout(Wv);
    const auto p = inputs<T>(x, state, wt, cb, Wqd, Wkd, Wvd, Wg, bg, bs, NH);
    const Grad<T> a{dc.data_ptr<T>(), dc.stride(1),
                    dq.data_ptr<T>(), dk.data_ptr<T>(), dv.data_ptr<T>(), dq.stride(1),
                    dk.stride(1), dv.stride(1), dgates.data_ptr<T>(), dx.data_ptr<T>(),
                    dstate.data_ptr<T>()};
    T* pp = part.data_ptr<T>();
    at::parallel_for(0, B * segs, 1, [&](int64_t lo, int64_t hi) {
      std::vector<T> buf((3 + 3 * kGateRows) * D + kGateRows * 2 * NH, T(0)), ring(K * D);
      for (int64_t u = lo; u < hi; ++u) {
        const int64_t b = u / segs, s0 = (u % segs) * kSegment;
        bwd(p, a, b, s0, std::min(S, s0 + kSegment), pp + at::get_thread_num() * width,
            buf.data(), ring.data());
      }
    });
  });
  auto sums = part.sum(0);
  std::vector<at::Tensor> dW;
  for (int64_t j = 0; j < 3; ++j) {
    auto Wj = sums.narrow(0, j * D * bs, D * bs);
    if (diag) {
      AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mlstm_input_dw", [&] {
        dW.push_back(from_diagonals<scalar_t>(Wj.view({4, D})));
      });
    } else {
      dW.push_back(Wj.view({D / bs, bs, bs}));
    }
  }
  auto dw = sums.narrow(0, 3 * D * bs, K * D).view({K, D});
  auto db = sums.narrow(0, 3 * D * bs + K * D, D);
  return {dx, dstate, dw, db, dW[0], dW[1], dW[2]};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", torch::wrap_pybind_function(forward), "forward");
  m.def("backward", torch::wrap_pybind_function(backward), "backward");
}
