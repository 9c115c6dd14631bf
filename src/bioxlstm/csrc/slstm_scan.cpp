// The sLSTM scan's loops, forward and back-propagation through time: every (batch, head) pair is
// its own recurrence, so all steps run inside one parallel region, the small recurrent matvec
// written out in eight independent chains of vector sums (layers/slstm_cpu.py, layers/slstm.py).
// The per-pair loops use BX_CLONES and libmvec (bioxlstm_common.h); on a CPU with AVX-512 the
// whole kernel is built for it, with 64-byte vectors.
#include <torch/extension.h>
#include "bioxlstm_common.h"

#include <atomic>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include <ATen/Parallel.h>

// The vectors are loaded and stored with memcpy in place (vload and vstore compile to the same
// loads, but GCC then allocates this file's registers differently).

// y[j0 : j0 + NV L] = sum_r v[r] * W[r, j0 : j0 + NV L] (L lanes per vector) with the rows split
// into P interleaved partial sums: NV P independent chains of FMAs, all in registers, so the
// sums do not wait on each FMA's latency the way one chain per vector of columns would.
template <typename T, int NV, int P>
static BX_INLINE void vec_mat_block(const T* __restrict__ v, const T* __restrict__ W,
                                    int64_t rows, int64_t cols, T* __restrict__ y) {
  using V = Vec<T>;
  constexpr int64_t L = kLanes<T>;
  V acc[P][NV] = {};
  int64_t r = 0;
  for (; r + P <= rows; r += P)
    for (int q = 0; q < P; ++q)
      for (int k = 0; k < NV; ++k) {
        V w;
        std::memcpy(&w, W + (r + q) * cols + k * L, sizeof(V));
        acc[q][k] += v[r + q] * w;
      }
  for (; r < rows; ++r)
    for (int k = 0; k < NV; ++k) {
      V w;
      std::memcpy(&w, W + r * cols + k * L, sizeof(V));
      acc[0][k] += v[r] * w;
    }
  for (int k = 0; k < NV; ++k) {
    for (int q = 1; q < P; ++q) acc[0][k] += acc[q][k];
    std::memcpy(y + k * L, &acc[0][k], sizeof(V));
  }
}

// y[0:cols] = sum_r v[r] * W[r, 0:cols] for a row-major W (rows, cols): eight chains of sums
// per block of columns, as many vectors wide as there are columns left.
template <typename T>
static BX_INLINE void vec_mat(const T* __restrict__ v, const T* __restrict__ W, int64_t rows,
                              int64_t cols, T* __restrict__ y) {
  constexpr int64_t L = kLanes<T>;
  int64_t j = 0;
  for (; j + 8 * L <= cols; j += 8 * L) vec_mat_block<T, 8, 1>(v, W + j, rows, cols, y + j);
  for (; j + 4 * L <= cols; j += 4 * L) vec_mat_block<T, 4, 2>(v, W + j, rows, cols, y + j);
  for (; j + 2 * L <= cols; j += 2 * L) vec_mat_block<T, 2, 4>(v, W + j, rows, cols, y + j);
  for (; j + L <= cols; j += L) vec_mat_block<T, 1, 8>(v, W + j, rows, cols, y + j);
  for (; j < cols; ++j) {
    T acc = 0;
    for (int64_t r = 0; r < rows; ++r) acc += v[r] * W[r * cols + j];
    y[j] = acc;
  }
}

// dR[r, j] += sum_s v[s][r] * g[s * cols + j] over kSteps buffered steps s: the recurrent weight's
// gradient, updated once per kSteps steps with a block of g held in vector registers, so each
// block of dR is loaded and stored once for all of them.
constexpr int64_t kSteps = 8;
template <typename T>
static BX_INLINE void add_outer(const T* const* v, const T* __restrict__ g, int64_t rows,
                                   int64_t cols, T* __restrict__ dR) {
  using V = Vec<T>;
  constexpr int64_t L = kLanes<T>;
  int64_t j = 0;
  for (; j + L <= cols; j += L) {
    V gs[kSteps];
    for (int64_t s = 0; s < kSteps; ++s) std::memcpy(&gs[s], g + s * cols + j, sizeof(V));
    for (int64_t r = 0; r < rows; ++r) {
      V acc;
      std::memcpy(&acc, dR + r * cols + j, sizeof(V));
      for (int64_t s = 0; s < kSteps; ++s) acc += v[s][r] * gs[s];
      std::memcpy(dR + r * cols + j, &acc, sizeof(V));
    }
  }
  for (; j < cols; ++j)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t s = 0; s < kSteps; ++s) dR[r * cols + j] += v[s][r] * g[s * cols + j];
}

// Start loading n values at p into cache, for writing if write: a pair's rows of a few steps
// ahead, which lie in pieces across each token's block where the hardware prefetchers miss them.
template <typename T, bool write = false> static BX_INLINE void prefetch(const T* p, int64_t n) {
  for (int64_t d = 0; d < n; d += 64 / (int64_t)sizeof(T)) __builtin_prefetch(p + d, write, 3);
}
constexpr int64_t kAhead = 4;  // steps ahead to prefetch

template <typename T> struct Fwd {
  int64_t B, S, NH, DH;
  const T *x, *bias, *R, *h0, *c0, *n0;
  T *h, *c, *n, *acts, *m;
};

// All S steps of the (batch, head) pairs u of one task. Buffers as described at `forward`.
template <typename T> static BX_INLINE void forward_pair(const Fwd<T>& p, int64_t u, T* rec) {
  const int64_t S = p.S, NH = p.NH, DH = p.DH, HD = NH * DH, G = 4 * DH;
  const int64_t b = u / NH, hd = u % NH, off = b * HD + hd * DH;
  const T* R = p.R + hd * DH * G;
  const T* bi = p.bias + hd * DH;
  const T* hp = p.h0 + off; const T* cp = p.c0 + off; const T* np = p.n0 + off;
  T* __restrict__ mp = p.m + off;
  for (int64_t t = 0; t < S; ++t) {
    vec_mat(hp, R, DH, G, rec);
    const int64_t st = (b * S + t) * HD + hd * DH;
    const T* __restrict__ x = p.x + (b * S + t) * 4 * HD + hd * DH;
    if (t + kAhead < S)
      for (int64_t g = 0; g < 4; ++g) prefetch(x + (kAhead * 4 + g) * HD, DH);
    T* __restrict__ a = p.acts + (b * S + t) * 5 * HD + hd * DH;
    T* __restrict__ cs = p.c + st; T* __restrict__ ns = p.n + st; T* __restrict__ hs = p.h + st;
#pragma omp simd
    for (int64_t d = 0; d < DH; ++d) {
      const T ir = x[d] + rec[d] + bi[d];
      const T fr = x[HD + d] + rec[DH + d] + bi[HD + d];
      const T zr = x[2 * HD + d] + rec[2 * DH + d] + bi[2 * HD + d];
      const T orr = x[3 * HD + d] + rec[3 * DH + d] + bi[3 * HD + d];
      // log sigmoid(f) and sigmoid(-f) from one exponential
      const T ef = std::exp(-std::abs(fr)), l = std::log1p(ef), qf = 1 / (1 + ef);
      const T lf = fr >= 0 ? -l : fr - l, sf = fr >= 0 ? ef * qf : qf;
      const T cv = cp[d], nv = np[d], lfm = lf + mp[d];
      // m = max(i, log f + m), or i while n = 0; the gate at the maximum is exp(0) = 1 exactly
      const bool first = (nv == 0) | (ir >= lfm);
      const T dif = lfm - ir, e = std::exp(first ? dif : -dif);
      const T ig = first ? T(1) : e, fg = first ? e : T(1);
      const T eo = std::exp(-std::abs(orr)), qo = 1 / (1 + eo), so = orr >= 0 ? qo : eo * qo;
      const T tz = std::tanh(zr);
      const T cn = fg * cv + ig * tz, nn = fg * nv + ig;
      cs[d] = cn; ns[d] = nn; hs[d] = so * cn / nn; mp[d] = first ? ir : lfm;
      a[d] = ig; a[HD + d] = fg; a[2 * HD + d] = tz; a[3 * HD + d] = so; a[4 * HD + d] = sf;
    }
    hp = hs; cp = cs; np = ns;
  }
}

template <typename T> struct Bwd {
  int64_t B, S, NH, DH;
  const T *d_out, *Rt, *h0, *c0, *n0, *h, *c, *n, *acts;
  T *d_raw, *dh, *dc, *dn, *dR, *dbias;
};

// Back-propagation through all S steps of pair u; buffers as described at `backward`. gbuf holds
// the gate gradients of the last kSteps steps until they are added to dR, then DH zeros that
// stand in for h_{t-1} in the unused slots of the last, partial group.
template <typename T>
static BX_INLINE void backward_pair(const Bwd<T>& p, int64_t u, T* __restrict__ gbuf) {
  const int64_t S = p.S, NH = p.NH, DH = p.DH, HD = NH * DH, G = 4 * DH;
  const int64_t b = u / NH, hd = u % NH, off = b * HD + hd * DH;
  const T* Rt = p.Rt + hd * G * DH;
  T* __restrict__ dr = p.dh + off; T* __restrict__ dcs = p.dc + off;
  T* __restrict__ dns = p.dn + off;
  T* __restrict__ dR = p.dR + u * DH * G; T* __restrict__ db = p.dbias + u * G;
  const T* hps[kSteps];
  int64_t slot = 0;
  for (int64_t t = S - 1; t >= 0; --t) {
    const int64_t st = (b * S + t) * HD + hd * DH;
    T* __restrict__ g = gbuf + slot * G;
    const T* __restrict__ a = p.acts + (b * S + t) * 5 * HD + hd * DH;
    const T* __restrict__ cp = t > 0 ? p.c + st - HD : p.c0 + off;
    const T* __restrict__ np = t > 0 ? p.n + st - HD : p.n0 + off;
    const T* __restrict__ cs = p.c + st; const T* __restrict__ ns = p.n + st;
    const T* __restrict__ go = p.d_out + st;
    T* __restrict__ dst = p.d_raw + (b * S + t) * 4 * HD + hd * DH;
    if (t >= kAhead) {
      for (int64_t g = 0; g < 5; ++g) prefetch(a + (g - kAhead * 5) * HD, DH);
      for (int64_t g = 0; g < 4; ++g) prefetch<T, true>(dst + (g - kAhead * 4) * HD, DH);
      prefetch(cs - kAhead * HD, DH); prefetch(ns - kAhead * HD, DH);
      prefetch(go - kAhead * HD, DH); prefetch(p.h + st - kAhead * HD, DH);
    }
#pragma omp simd
    for (int64_t d = 0; d < DH; ++d) {
      const T ig = a[d], fg = a[HD + d], tz = a[2 * HD + d], so = a[3 * HD + d];
      const T sf = a[4 * HD + d];
      const T n = ns[d], r = cs[d] / n, dhv = go[d] + dr[d];
      const T dcv = dcs[d] + dhv * so / n, dnv = dns[d] - dhv * so * r / n;
      const T gi = (dcv * tz + dnv) * ig, gf = (dcv * cp[d] + dnv * np[d]) * fg * sf;
      const T gz = dcv * ig * (1 - tz * tz), go_ = dhv * r * so * (1 - so);
      g[d] = gi; g[DH + d] = gf; g[2 * DH + d] = gz; g[3 * DH + d] = go_;
      dst[d] = gi; dst[HD + d] = gf; dst[2 * HD + d] = gz; dst[3 * HD + d] = go_;
      dcs[d] = dcv * fg; dns[d] = dnv * fg;
    }
    vec_mat(g, Rt, G, DH, dr);
    for (int64_t j = 0; j < G; ++j) db[j] += g[j];
    hps[slot++] = t > 0 ? p.h + st - HD : p.h0 + off;
    if (t == 0)
      for (; slot < kSteps; ++slot) {
        hps[slot] = gbuf + kSteps * G;
        std::fill(gbuf + slot * G, gbuf + (slot + 1) * G, T(0));
      }
    if (slot == kSteps) {
      add_outer(hps, gbuf, DH, G, dR);
      slot = 0;
    }
  }
}

// Each (batch, head) pair is an independent recurrence, so one parallel region covers the whole
// scan; its tasks take pairs from a shared counter, which keeps the threads balanced when other
// work competes for the cores.
template <typename F> static void for_each_pair(int64_t pairs, const F& run) {
  std::atomic<int64_t> next{0};
  at::parallel_for(0, pairs, 1, [&](int64_t, int64_t) {
    for (int64_t u = next++; u < pairs; u = next++) run(u);
  });
}

// Per-pair entry points, one per dtype, built for each target in BX_CLONES.
BX_CLONES static void forward_one(const Fwd<float>& p, int64_t u, float* rec) {
  forward_pair(p, u, rec);
}
BX_CLONES static void forward_one(const Fwd<double>& p, int64_t u, double* rec) {
  forward_pair(p, u, rec);
}
BX_CLONES static void backward_one(const Bwd<float>& p, int64_t u, float* gbuf) {
  backward_pair(p, u, gbuf);
}
BX_CLONES static void backward_one(const Bwd<double>& p, int64_t u, double* gbuf) {
  backward_pair(p, u, gbuf);
}

// wx (B, S, 4, NH, DH) gate inputs; bias (4, NH, DH); R (NH, DH, 4 DH); state (B, NH, DH) each,
// all contiguous and of one dtype. Returns h, c, n (B, S, NH, DH) after each step, acts (B, S, 5,
// NH, DH) = ig, fg, tanh z, sig o, sig -f, and the end stabiliser m (B, NH, DH).
std::vector<at::Tensor> forward(at::Tensor wx, at::Tensor bias, at::Tensor R, at::Tensor h0,
                                at::Tensor c0, at::Tensor n0, at::Tensor m0) {
  const int64_t B = wx.size(0), S = wx.size(1), NH = wx.size(3), DH = wx.size(4);
  auto hs = at::empty({B, S, NH, DH}, wx.options()), cs = at::empty_like(hs);
  auto ns = at::empty_like(hs), acts = at::empty({B, S, 5, NH, DH}, wx.options());
  auto m = m0.clone();
  AT_DISPATCH_FLOATING_TYPES(wx.scalar_type(), "slstm_forward", [&] {
    const Fwd<scalar_t> p{B, S, NH, DH, wx.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(),
                          R.data_ptr<scalar_t>(), h0.data_ptr<scalar_t>(),
                          c0.data_ptr<scalar_t>(), n0.data_ptr<scalar_t>(),
                          hs.data_ptr<scalar_t>(), cs.data_ptr<scalar_t>(),
                          ns.data_ptr<scalar_t>(), acts.data_ptr<scalar_t>(),
                          m.data_ptr<scalar_t>()};
    for_each_pair(B * NH, [&](int64_t u) {
      std::vector<scalar_t> rec(4 * DH);
      forward_one(p, u, rec.data());
    });
  });
  return {hs, cs, ns, acts, m};
}

// d_out (B, S, NH, DH); dh_end and the start state h0, c0, n0 (B, NH, DH); Rt (NH, 4 DH, DH); hs,
// cs, ns, acts from forward, all contiguous. Returns d_raw (B, S, 4, NH, DH), the gradient of the
// gate inputs, those of h0, c0, n0, and each pair's share of the gradients of R (B, NH, DH, 4 DH)
// and of the bias (B, NH, 4 DH), summed over time in the same pass.
std::vector<at::Tensor> backward(at::Tensor d_out, at::Tensor dh_end, at::Tensor Rt, at::Tensor h0,
                                 at::Tensor c0, at::Tensor n0, at::Tensor hs, at::Tensor cs,
                                 at::Tensor ns, at::Tensor acts) {
  const int64_t B = acts.size(0), S = acts.size(1), NH = acts.size(3), DH = acts.size(4);
  auto d_raw = at::empty({B, S, 4, NH, DH}, acts.options());
  auto dh = dh_end.clone(), dc = at::zeros_like(dh), dn = at::zeros_like(dh);
  auto dR = at::zeros({B, NH, DH, 4 * DH}, acts.options());
  auto dbias = at::zeros({B, NH, 4 * DH}, acts.options());
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "slstm_backward", [&] {
    const Bwd<scalar_t> p{B, S, NH, DH, d_out.data_ptr<scalar_t>(), Rt.data_ptr<scalar_t>(),
                          h0.data_ptr<scalar_t>(), c0.data_ptr<scalar_t>(),
                          n0.data_ptr<scalar_t>(), hs.data_ptr<scalar_t>(),
                          cs.data_ptr<scalar_t>(), ns.data_ptr<scalar_t>(),
                          acts.data_ptr<scalar_t>(), d_raw.data_ptr<scalar_t>(),
                          dh.data_ptr<scalar_t>(), dc.data_ptr<scalar_t>(),
                          dn.data_ptr<scalar_t>(), dR.data_ptr<scalar_t>(),
                          dbias.data_ptr<scalar_t>()};
    for_each_pair(B * NH, [&](int64_t u) {
      std::vector<scalar_t> gbuf(kSteps * 4 * DH + DH);
      backward_one(p, u, gbuf.data());
    });
  });
  return {d_raw, dh, dc, dn, dR, dbias};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", torch::wrap_pybind_function(forward), "forward");
  m.def("backward", torch::wrap_pybind_function(backward), "backward");
}
