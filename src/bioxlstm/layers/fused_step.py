"""Fused single-token generation step on CPU: the whole model's step in one compiled call.

A generation step feeds one token per sequence through every block. In the generic forward that
is a few hundred small operator calls, whose Python and dispatcher overhead dominates at batch 1.
Here the step runs in C++: the dense projections (mLSTM up/down, sLSTM FFN, head) are
register-tiled loops that read each weight row once for all sequences, split over threads (a
step streams every weight, so it is bound by memory bandwidth), and the rest (norms, causal conv,
block-diagonal q/k/v and gates, RoPE, the mLSTM and sLSTM cell updates, output gating) are
hand-fused loops. It reads the model's parameters as they are (no copies), never modifies the
incoming state unless asked to, and returns the same state layout as the generic path, so the
two paths can be mixed freely.

Built on first use by `cpu_build` and cached by torch; if the build fails, or
BIOXLSTM_NO_EXTENSIONS=1 is set, `load()` returns None and the generic forward runs instead.
"""

from __future__ import annotations

from functools import cache
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from bioxlstm.layers.cpu_build import SIMD_PRELUDE, build_extension
from bioxlstm.layers.mlstm import EPS as MLSTM_EPS

_SOURCE = SIMD_PRELUDE + r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

// Hot loops are compiled for AVX-512, AVX2 + FMA and baseline x86-64, picked at load time.
#if defined(__x86_64__) && defined(__GNUC__)
#define HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HOT
#endif
#define INL static inline __attribute__((always_inline))

namespace bioxlstm_fused {

template <typename T> INL T sigm(T x) {
  const T e = std::exp(-std::abs(x));
  return x >= 0 ? T(1) / (T(1) + e) : e / (T(1) + e);
}
template <typename T> INL T logsigm(T x) {
  return std::min(x, T(0)) - std::log1p(std::exp(-std::abs(x)));
}
template <typename T> INL T silu(T x) { return x / (T(1) + std::exp(-x)); }
template <typename T> INL T gelu(T x) { return T(0.5) * x * (T(1) + std::erf(x * T(M_SQRT1_2))); }

template <typename T> INL T dot(const T* a, const T* b, int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// y = (x - mean) / sqrt(var + eps) * (1 + g); no weight when g is null
template <typename T> INL void layer_norm(const T* x, const T* g, T* y, int64_t n, double eps) {
  double s = 0, v = 0;
  for (int64_t i = 0; i < n; ++i) s += x[i];
  const double mean = s / n;
  for (int64_t i = 0; i < n; ++i) v += (x[i] - mean) * (x[i] - mean);
  const T mu = T(mean), rstd = T(1.0 / std::sqrt(v / n + eps));
  if (g) {
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - mu) * rstd * (T(1) + g[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - mu) * rstd;
  }
}

// y[b, o] = add[b, o] + sum_i x[b, i] W[o, i] for o in [o0, o1): each row of W is read once for
// all b, in tiles of 2 rows x 4 sequences (then 4 rows x 1 sequence) held in registers; add may
// be null.
template <typename T>
HOT void linear_range(const T* x, const T* W, const T* add, T* y, int64_t B, int64_t I, int64_t O,
                      int64_t o0, int64_t o1) {
  int64_t o = o0;
  const int64_t B4 = B - B % 4;
  for (; B4 && o + 2 <= o1; o += 2) {
    const T *w0 = W + o * I, *w1 = w0 + I;
    for (int64_t b = 0; b < B4; b += 4) {
      const T *x0 = x + b * I, *x1 = x0 + I, *x2 = x1 + I, *x3 = x2 + I;
      T s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
#pragma omp simd reduction(+ : s00, s01, s02, s03, s10, s11, s12, s13)
      for (int64_t i = 0; i < I; ++i) {
        s00 += w0[i] * x0[i]; s01 += w0[i] * x1[i]; s02 += w0[i] * x2[i]; s03 += w0[i] * x3[i];
        s10 += w1[i] * x0[i]; s11 += w1[i] * x1[i]; s12 += w1[i] * x2[i]; s13 += w1[i] * x3[i];
      }
      const T s[2][4] = {{s00, s01, s02, s03}, {s10, s11, s12, s13}};
      for (int64_t r = 0; r < 2; ++r)
        for (int64_t c = 0; c < 4; ++c) {
          const int64_t at = (b + c) * O + o + r;
          y[at] = (add ? add[at] : T(0)) + s[r][c];
        }
    }
    for (int64_t b = B4; b < B; ++b)
      for (int64_t r = 0; r < 2; ++r)
        y[b * O + o + r] = (add ? add[b * O + o + r] : T(0)) + dot(W + (o + r) * I, x + b * I, I);
  }
  for (; o + 4 <= o1; o += 4) {
    const T *w0 = W + o * I, *w1 = w0 + I, *w2 = w1 + I, *w3 = w2 + I;
    for (int64_t b = 0; b < B; ++b) {
      const T* xb = x + b * I;
      T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
      for (int64_t i = 0; i < I; ++i) {
        s0 += w0[i] * xb[i]; s1 += w1[i] * xb[i]; s2 += w2[i] * xb[i]; s3 += w3[i] * xb[i];
      }
      T* yb = y + b * O + o;
      if (add) {
        const T* ab = add + b * O + o;
        yb[0] = ab[0] + s0; yb[1] = ab[1] + s1; yb[2] = ab[2] + s2; yb[3] = ab[3] + s3;
      } else {
        yb[0] = s0; yb[1] = s1; yb[2] = s2; yb[3] = s3;
      }
    }
  }
  for (; o < o1; ++o)
    for (int64_t b = 0; b < B; ++b)
      y[b * O + o] = (add ? add[b * O + o] : T(0)) + dot(W + o * I, x + b * I, I);
}

// Depthwise causal conv of one row: window = state (K-1, D) then x; writes silu(y) and the new state.
template <typename T>
INL void conv_row(const T* x, const T* st, const T* w, const T* bias, T* out, T* new_st,
                  int64_t D, int64_t K) {
  // tap by tap over all channels, in the order bias, state rows, x, so the loops vectorise
  std::copy(bias, bias + D, out);
  for (int64_t k = 0; k < K - 1; ++k) {
    const T* sk = st + k * D;
#pragma omp simd
    for (int64_t ch = 0; ch < D; ++ch) out[ch] += w[ch * K + k] * sk[ch];
  }
#pragma omp simd
  for (int64_t ch = 0; ch < D; ++ch) {
    out[ch] = silu(out[ch] + w[ch * K + K - 1] * x[ch]);
  }
  if (K > 1) {  // new_st may be st itself: shift left, then append x
    std::memmove(new_st, st + D, (K - 2) * D * sizeof(T));
    std::copy(x, x + D, new_st + (K - 2) * D);
  }
}

// y[blk, o] = sum_i W[blk, o, i] x[blk, i] for blocks of size bs (BS > 0: a compile-time bs)
template <typename T, int64_t BS = 0>
INL void block_diag(const T* x, const T* W, T* y, int64_t D, int64_t bs) {
  if (BS) {
#pragma omp simd
    for (int64_t o = 0; o < D; ++o) {
      T s = 0;
      for (int64_t i = 0; i < BS; ++i) s += W[o * BS + i] * x[o / BS * BS + i];
      y[o] = s;
    }
    return;
  }
  for (int64_t o = 0; o < D; ++o) {
    const T* xb = x + o / bs * bs; const T* wr = W + o * bs;
    T s = 0;
    for (int64_t i = 0; i < bs; ++i) s += wr[i] * xb[i];
    y[o] = s;
  }
}

struct MLSTMWeights {
  int64_t D, K, NH, DH, bs;
  double eps_head, eps_cell;
  const void *conv_w, *conv_b, *Wq, *Wk, *Wv, *Wi, *bi, *Wf, *bf, *out_norm, *skip;
};

// One row's mLSTM inputs: conv + silu, q/k/v, gate pre-activations, then RoPE on q and k.
template <typename T>
HOT void mlstm_prep(const MLSTMWeights& w, const T* up, const T* conv_st, const T* rot, T* c,
                    T* qkv, T* gates, T* conv_new) {
  const int64_t D = w.D, NH = w.NH, DH = w.DH;
  T* q = qkv; T* k = q + D; T* v = k + D;
  conv_row(up, conv_st, (const T*)w.conv_w, (const T*)w.conv_b, c, conv_new, D, w.K);
  if (w.bs == 4) {  // the presets' q/k/v block size
    block_diag<T, 4>(c, (const T*)w.Wq, q, D, 4);
    block_diag<T, 4>(c, (const T*)w.Wk, k, D, 4);
    block_diag<T, 4>(up, (const T*)w.Wv, v, D, 4);
  } else {
    block_diag(c, (const T*)w.Wq, q, D, w.bs);
    block_diag(c, (const T*)w.Wk, k, D, w.bs);
    block_diag(up, (const T*)w.Wv, v, D, w.bs);
  }
  for (int64_t h = 0; h < NH; ++h) {
    gates[h] = ((const T*)w.bi)[h] + dot((const T*)w.Wi + h * 3 * D, qkv, 3 * D);
    gates[NH + h] = ((const T*)w.bf)[h] + dot((const T*)w.Wf + h * 3 * D, qkv, 3 * D);
  }
  if (rot) {
    const T* sn = rot + DH / 2;
    for (T* p : {q, k})
      for (int64_t h = 0; h < NH; ++h)
        for (int64_t j = 0; j < DH / 2; ++j) {
          T* a = p + h * DH + j;
          const T x1 = a[0], x2 = a[DH / 2];
          a[0] = x1 * rot[j] - x2 * sn[j];
          a[DH / 2] = x1 * sn[j] + x2 * rot[j];
        }
  }
}

// One (row, head) of the mLSTM cell, C = f C + i k v^T fused with h = C^T q / max(|n.q|, e^-m),
// then the head norm, skip and output gate: g = (norm(h) + skip c) silu(z).
template <typename T>
HOT void mlstm_cell(const MLSTMWeights& w, int64_t h, const T* qkv, const T* gates, const T* c,
                    const T* z, const T* C0, const T* n0, T m, T* C1, T* n1, T* m1, T* num, T* hn,
                    T* g) {
  const int64_t D = w.D, NH = w.NH, DH = w.DH;
  const T* q = qkv + h * DH; const T* k = q + D; const T* v = k + D;
  const T lf = logsigm(gates[NH + h]), ig = gates[h];
  const T mn = std::max(lf + m, ig);
  const T fw = std::exp(lf + m - mn), iw = std::exp(ig - mn), root = std::sqrt(T(DH));
  for (int64_t j = 0; j < DH; ++j) num[j] = 0;
  T qn = 0;
  for (int64_t i = 0; i < DH; ++i) {
    const T ks = k[i] / root, a = iw * ks, qi = q[i];
    const T* cr = C0 + i * DH; T* cw = C1 + i * DH;
#pragma omp simd
    for (int64_t j = 0; j < DH; ++j) {
      const T cv = fw * cr[j] + a * v[j];
      cw[j] = cv;
      num[j] += qi * cv;
    }
    n1[i] = fw * n0[i] + iw * ks;
    qn += qi * n1[i];
  }
  *m1 = mn;
  const T denom = std::max(std::abs(qn), std::exp(-mn)) + T(w.eps_cell);
  for (int64_t j = 0; j < DH; ++j) num[j] = num[j] / denom;
  layer_norm(num, (const T*)nullptr, hn, DH, w.eps_head);
  const T* onw = (const T*)w.out_norm + h * DH; const T* skip = (const T*)w.skip + h * DH;
  for (int64_t j = 0; j < DH; ++j)
    g[h * DH + j] = (hn[j] * (T(1) + onw[j]) + skip[j] * c[h * DH + j]) * silu(z[h * DH + j]);
}

struct SLSTMWeights {
  int64_t d, K, NH, DH;
  double eps_head;
  const void *conv_w, *conv_b, *W[4], *R, *bias, *out_norm;
};

// One (row, head) of the sLSTM block: gate inputs (i, f from the conv, z, o from the input),
// the recurrent term R h, the cell update, the head norm, and the residual add into x.
template <typename T>
HOT void slstm_cell(const SLSTMWeights& w, int64_t hd, const T* u, const T* c_in, const T* h0,
                    const T* c0, const T* n0, const T* m0, T* h1, T* c1, T* n1, T* m1, T* raw,
                    T* hn, T* x) {
  const int64_t NH = w.NH, DH = w.DH;
  const T* srcs[4] = {c_in + hd * DH, c_in + hd * DH, u + hd * DH, u + hd * DH};
  const T* bias = (const T*)w.bias;
  for (int64_t gi = 0; gi < 4; ++gi)
    for (int64_t o = 0; o < DH; ++o)
      raw[gi * DH + o] = dot((const T*)w.W[gi] + (hd * DH + o) * DH, srcs[gi], DH)
                         + bias[(gi * NH + hd) * DH + o];
  const T* R = (const T*)w.R + hd * DH * 4 * DH;
  for (int64_t i = 0; i < DH; ++i) {
    const T a = h0[i]; const T* r = R + i * 4 * DH;
#pragma omp simd
    for (int64_t j = 0; j < 4 * DH; ++j) raw[j] += a * r[j];
  }
#pragma omp simd
  for (int64_t j = 0; j < DH; ++j) {
    const T ir = raw[j], fr = raw[DH + j], zr = raw[2 * DH + j], orr = raw[3 * DH + j];
    const T lf = logsigm(fr), n = n0[j], m = m0[j];
    const T mn = n == 0 ? ir : std::max(ir, lf + m);
    const T ig = std::exp(ir - mn), fg = std::exp(lf + m - mn);
    const T cn = fg * c0[j] + ig * std::tanh(zr), nn = fg * n + ig;
    c1[j] = cn; n1[j] = nn; m1[j] = mn;
    h1[j] = sigm(orr) * cn / nn;
  }
  layer_norm(h1, (const T*)nullptr, hn, DH, w.eps_head);
  const T* onw = (const T*)w.out_norm + hd * DH;
  for (int64_t j = 0; j < DH; ++j) x[hd * DH + j] += hn[j] * (T(1) + onw[j]);
}

// A state tensor of the wrong shape would be read out of bounds: refuse it by name.
inline void expect(const at::Tensor& t, at::IntArrayRef sizes, const char* what) {
  TORCH_CHECK(t.sizes() == sizes, "state ", what, " has shape ", t.sizes(), ", expected ", sizes);
}

// Where a block writes its new state: over the old one in place, or a new tensor.
inline at::Tensor fresh(const at::Tensor& old, bool inplace) {
  return inplace ? old : at::empty_like(old);
}

// Units per task so that each task has at least 2^15 multiply-adds. A step reads every weight
// once, so it is bound by memory bandwidth, which grows with the cores reading: even at batch 1
// a 256 x 1024 projection is worth splitting (on 2 cores the step took 0.68 ms against 0.95 ms
// with 2^21, which kept it on one thread); below ~2^15 the hand-offs cost more than they save.
inline int64_t grain(int64_t work_per_unit) {
  return std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(work_per_unit, 1));
}

template <typename T> at::Tensor linear(const at::Tensor& x, const at::Tensor& W, const T* add) {
  const int64_t B = x.size(0), I = x.size(1), O = W.size(0);
  auto y = at::empty({B, O}, x.options());
  const T* xp = x.data_ptr<T>(); const T* wp = W.data_ptr<T>(); T* yp = y.data_ptr<T>();
  const int64_t blocks = (O + 3) / 4;
  at::parallel_for(0, blocks, grain(4 * I * B), [&](int64_t lo, int64_t hi) {
    linear_range(xp, wp, add, yp, B, I, O, lo * 4, std::min(hi * 4, O));
  });
  return y;
}

template <typename T> at::Tensor rows_layer_norm(const at::Tensor& x, const at::Tensor& g, double eps) {
  auto y = at::empty_like(x);
  const int64_t B = x.size(0), d = x.size(1);
  for (int64_t b = 0; b < B; ++b)
    layer_norm(x.data_ptr<T>() + b * d, g.data_ptr<T>(), y.data_ptr<T>() + b * d, d, eps);
  return y;
}

// mLSTM block. w: norm, proj_up (2D, d), conv w (D, K), conv b, Wq, Wk, Wv (D/bs, bs, bs),
// Wi (NH, 3D), bi, Wf, bf, out_norm (D), skip (D), proj_down (d, D).
// s: conv state (B, K-1, D), C (B, NH, DH, DH), n (B, NH, DH), m (B, NH). rot: (1 or B, DH) or empty.
template <typename T>
at::Tensor mlstm_block(const at::Tensor& x, const at::Tensor* w, const at::Tensor* s,
                       std::vector<at::Tensor>& out, const at::Tensor& rot, bool inplace,
                       double eps_norm, double eps_head, double eps_cell) {
  const int64_t B = x.size(0), D = w[2].size(0), K = w[2].size(1);
  const int64_t NH = w[7].size(0), DH = D / NH;
  const MLSTMWeights mw{D, K, NH, DH, w[4].size(1), eps_head, eps_cell, w[2].data_ptr(),
                        w[3].data_ptr(), w[4].data_ptr(), w[5].data_ptr(), w[6].data_ptr(),
                        w[7].data_ptr(), w[8].data_ptr(), w[9].data_ptr(), w[10].data_ptr(),
                        w[11].data_ptr(), w[12].data_ptr()};
  at::Tensor u = rows_layer_norm<T>(x, w[0], eps_norm);
  at::Tensor up = linear<T>(u, w[1], nullptr);  // (B, 2D): x_m then z
  expect(s[0], {B, K - 1, D}, "mLSTM conv"); expect(s[1], {B, NH, DH, DH}, "mLSTM C");
  expect(s[2], {B, NH, DH}, "mLSTM n"); expect(s[3], {B, NH}, "mLSTM m");
  auto conv_st = s[0].contiguous(), C0 = s[1].contiguous(), n0 = s[2].contiguous(),
       m0 = s[3].contiguous();
  auto conv_new = fresh(conv_st, inplace), C1 = fresh(C0, inplace), n1 = fresh(n0, inplace),
       m1 = fresh(m0, inplace);
  auto cbuf = at::empty({B, D}, x.options()), qkv = at::empty({B, 3 * D}, x.options());
  auto gates = at::empty({B, 2 * NH}, x.options()), g = at::empty({B, D}, x.options());
  const T* U = up.data_ptr<T>(); T* Cb = cbuf.data_ptr<T>(); T* QKV = qkv.data_ptr<T>();
  T* G = gates.data_ptr<T>();
  const T* rp = rot.numel() ? rot.data_ptr<T>() : nullptr;
  const int64_t rot_stride = rp && rot.size(0) > 1 ? DH : 0;
  const T* cs = conv_st.data_ptr<T>(); T* cn = conv_new.data_ptr<T>();
  at::parallel_for(0, B, grain(D * (K + 3 * mw.bs) + 6 * NH * D), [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b)
      mlstm_prep(mw, U + b * 2 * D, cs + b * (K - 1) * D, rp ? rp + b * rot_stride : rp,
                 Cb + b * D, QKV + b * 3 * D, G + b * 2 * NH, cn + b * (K - 1) * D);
  });
  const T* C0p = C0.data_ptr<T>(); const T* n0p = n0.data_ptr<T>(); const T* m0p = m0.data_ptr<T>();
  T* C1p = C1.data_ptr<T>(); T* n1p = n1.data_ptr<T>(); T* m1p = m1.data_ptr<T>();
  T* gp = g.data_ptr<T>();
  at::parallel_for(0, B * NH, grain(3 * DH * DH), [&](int64_t lo, int64_t hi) {
    std::vector<T> num(DH), hn(DH);
    for (int64_t bh = lo; bh < hi; ++bh) {
      const int64_t b = bh / NH, h = bh % NH;
      mlstm_cell(mw, h, QKV + b * 3 * D, G + b * 2 * NH, Cb + b * D, U + b * 2 * D + D,
                 C0p + bh * DH * DH, n0p + bh * DH, m0p[bh], C1p + bh * DH * DH, n1p + bh * DH,
                 m1p + bh, num.data(), hn.data(), gp + b * D);
    }
  });
  out.insert(out.end(), {conv_new, C1, n1, m1});
  return linear<T>(g, w[13], x.data_ptr<T>());
}

// sLSTM block with its FFN. w: norm, conv w (d, K), conv b, Wi, Wf, Wz, Wo (NH, DH, DH),
// R (NH, DH, 4 DH), bias (4, NH, DH), out_norm (d), ffn_norm (d), ffn up (2F, d), ffn down (d, F).
// s: conv state (B, K-1, d), h, c, n, m (B, NH, DH). x is a tensor of this step: updated in place.
template <typename T>
at::Tensor slstm_block(at::Tensor x, const at::Tensor* w, const at::Tensor* s,
                       std::vector<at::Tensor>& out, bool inplace, double eps_norm,
                       double eps_head, double eps_ffn) {
  const int64_t B = x.size(0), d = x.size(1), K = w[1].size(1);
  const int64_t NH = w[3].size(0), DH = w[3].size(1);
  const SLSTMWeights sw{d, K, NH, DH, eps_head, w[1].data_ptr(), w[2].data_ptr(),
                        {w[3].data_ptr(), w[4].data_ptr(), w[5].data_ptr(), w[6].data_ptr()},
                        w[7].data_ptr(), w[8].data_ptr(), w[9].data_ptr()};
  at::Tensor u = rows_layer_norm<T>(x, w[0], eps_norm);
  expect(s[0], {B, K - 1, d}, "sLSTM conv");
  for (int i = 1; i < 5; ++i) expect(s[i], {B, NH, DH}, "sLSTM cell");
  auto conv_st = s[0].contiguous(), h0 = s[1].contiguous(), c0 = s[2].contiguous(),
       n0 = s[3].contiguous(), m0 = s[4].contiguous();
  auto conv_new = fresh(conv_st, inplace), h1 = fresh(h0, inplace), c1 = fresh(c0, inplace),
       n1 = fresh(n0, inplace), m1 = fresh(m0, inplace);
  auto cbuf = at::empty({B, d}, x.options());
  T* X = x.data_ptr<T>(); const T* Ub = u.data_ptr<T>(); T* Cb = cbuf.data_ptr<T>();
  for (int64_t b = 0; b < B; ++b)
    conv_row(Ub + b * d, conv_st.data_ptr<T>() + b * (K - 1) * d, (const T*)sw.conv_w,
             (const T*)sw.conv_b, Cb + b * d, conv_new.data_ptr<T>() + b * (K - 1) * d, d, K);
  T* H1 = h1.data_ptr<T>(); T* C1 = c1.data_ptr<T>(); T* N1 = n1.data_ptr<T>(); T* M1 = m1.data_ptr<T>();
  const T* H0 = h0.data_ptr<T>(); const T* C0 = c0.data_ptr<T>(); const T* N0 = n0.data_ptr<T>();
  const T* M0 = m0.data_ptr<T>();
  at::parallel_for(0, B * NH, grain(8 * DH * DH), [&](int64_t lo, int64_t hi) {
    std::vector<T> raw(4 * DH), hn(DH);
    for (int64_t bh = lo; bh < hi; ++bh) {
      const int64_t b = bh / NH, hd = bh % NH, e = bh * DH;
      slstm_cell(sw, hd, Ub + b * d, Cb + b * d, H0 + e, C0 + e, N0 + e, M0 + e, H1 + e, C1 + e,
                 N1 + e, M1 + e, raw.data(), hn.data(), X + b * d);
    }
  });
  at::Tensor u2 = rows_layer_norm<T>(x, w[10], eps_ffn);
  at::Tensor up = linear<T>(u2, w[11], nullptr);
  const int64_t F = w[12].size(1);
  auto gb = at::empty({B, F}, x.options());
  const T* Up = up.data_ptr<T>(); T* Gb = gb.data_ptr<T>();
  for (int64_t b = 0; b < B; ++b)
#pragma omp simd
    for (int64_t j = 0; j < F; ++j) Gb[b * F + j] = gelu(Up[b * 2 * F + j]) * Up[b * 2 * F + F + j];
  out.insert(out.end(), {conv_new, h1, c1, n1, m1});
  return linear<T>(gb, w[12], X);
}

}  // namespace bioxlstm_fused

// One token per sequence through the model. ids (B,); kinds[j] 0 = mLSTM, 1 = sLSTM block;
// weights and states are the blocks' tensors in order; eps = final norm, then per block the
// (block norm, head norm, cell or FFN norm) epsilons. Returns logits (B, vocab), the hidden state
// after the final norm (B, d), then every block's new state tensors; empty if a tensor is not a
// CPU tensor of the embedding's dtype (weights also contiguous). With inplace the new state
// overwrites the old and only the logits and hidden state are returned, unless a state tensor
// requires grad, is not contiguous, or shares memory with another; then new state tensors are
// returned as without it.
std::vector<at::Tensor> step(const at::Tensor& ids, const at::Tensor& embedding,
                             const at::Tensor& norm, const at::Tensor& head,
                             const std::vector<at::Tensor>& weights,
                             const std::vector<at::Tensor>& states,
                             const std::vector<int64_t>& kinds, const at::Tensor& rot,
                             const std::vector<double>& eps, int64_t vocab, bool inplace) {
  using namespace bioxlstm_fused;
  const auto dtype = embedding.scalar_type();
  auto usable = [&](const at::Tensor& t) {
    return t.scalar_type() == dtype && t.device().is_cpu() && t.is_contiguous();
  };
  for (const auto& t : weights)
    if (!usable(t)) return {};
  if (!usable(embedding) || !usable(norm) || !usable(head) || (rot.numel() && !usable(rot)))
    return {};
  std::vector<const void*> ptrs;
  for (const auto& t : states) {
    if (t.scalar_type() != dtype || !t.device().is_cpu()) return {};
    inplace = inplace && !t.requires_grad() && t.is_contiguous();
    if (t.numel()) ptrs.push_back(t.data_ptr());
  }
  std::sort(ptrs.begin(), ptrs.end());
  inplace = inplace && std::adjacent_find(ptrs.begin(), ptrs.end()) == ptrs.end();
  std::vector<at::Tensor> out(2);
  at::Tensor x = embedding.index_select(0, ids);
  AT_DISPATCH_FLOATING_TYPES(dtype, "fused_step", [&] {
    size_t wi = 0, si = 0;
    for (size_t j = 0; j < kinds.size(); ++j) {
      const double* e = eps.data() + 1 + 3 * j;
      if (kinds[j] == 0) {
        x = mlstm_block<scalar_t>(x, weights.data() + wi, states.data() + si, out, rot, inplace,
                                  e[0], e[1], e[2]);
        wi += 14; si += 4;
      } else {
        x = slstm_block<scalar_t>(x, weights.data() + wi, states.data() + si, out, inplace,
                                  e[0], e[1], e[2]);
        wi += 13; si += 5;
      }
    }
    auto hidden = rows_layer_norm<scalar_t>(x, norm, eps[0]);
    out[0] = linear<scalar_t>(hidden, head, nullptr).narrow(1, 0, vocab);
    out[1] = hidden;
  });
  if (inplace) out.resize(2);
  return out;
}
"""

_MLSTM_WEIGHTS = ("norm.weight", "layer.proj_up.weight", "layer.conv.weight", "layer.conv.bias",
                  "layer.q_proj.weight", "layer.k_proj.weight", "layer.v_proj.weight",
                  "layer.igate.weight", "layer.igate.bias", "layer.fgate.weight",
                  "layer.fgate.bias", "layer.out_norm.weight", "layer.skip",
                  "layer.proj_down.weight")
_SLSTM_WEIGHTS = ("norm.weight", "layer.conv.weight", "layer.conv.bias", "layer.igate.weight",
                  "layer.fgate.weight", "layer.zgate.weight", "layer.ogate.weight",
                  "layer.recurrent", "layer.bias", "layer.out_norm.weight", "ffn_norm.weight",
                  "ffn.proj_up.weight", "ffn.proj_down.weight")


@cache
def load() -> ModuleType | None:
    """The compiled module, built once per machine and cached by torch; None if unavailable."""
    return build_extension("bioxlstm_fused_step_v9", _SOURCE, ["step"], "fused step kernel")


class _Plan:
    """The parameters a fused step reads, gathered once per model (gathering costs ~0.2 ms)."""

    def __init__(self, model: nn.Module, registrations: int):
        self.registrations = registrations
        self.weights: list[Tensor] = []
        self.kinds: list[int] = []
        self.eps = [model.norm.eps]
        for block in model.stack.blocks:
            names = _SLSTM_WEIGHTS if block.kind == "slstm" else _MLSTM_WEIGHTS
            self.weights += [block.get_parameter(name) for name in names]
            self.kinds.append(int(block.kind == "slstm"))
            third = block.ffn_norm.eps if block.kind == "slstm" else MLSTM_EPS
            self.eps += [block.norm.eps, block.layer.out_norm.eps, third]
        self.head_dim = model.config.mlstm_inner_dim // model.config.mlstm_heads
        self.ends = model.embedding.weight, model.norm.weight, model.head.weight


_registrations = 0
_NO_ROTATION = torch.empty(0)


def _count_registration(*_: Any) -> None:
    """Any parameter or submodule (re)assigned anywhere invalidates the cached plans."""
    global _registrations
    _registrations += 1


nn.modules.module.register_module_parameter_registration_hook(_count_registration)
nn.modules.module.register_module_module_registration_hook(_count_registration)


def _plan(model: nn.Module) -> _Plan:
    plan = model.__dict__.get("_fused_step_plan")
    if plan is None or plan.registrations != _registrations:
        plan = _Plan(model, _registrations)
        model.__dict__["_fused_step_plan"] = plan
    return plan


def applies(model: nn.Module, input_ids: Tensor, state: Any) -> bool:
    """Whether `fused_step` can run this call: a causal model's one-token CPU step without grad."""
    config = model.config
    return (state is not None and input_ids.shape[1] == 1 and not torch.is_grad_enabled()
            and input_ids.device.type == "cpu" and not config.bidirectional
            and not config.rc_equivariant and not (model.training and config.dropout > 0)
            and config.fused_step_compatible
            and model.embedding.weight.dtype in (torch.float32, torch.float64)
            and load() is not None)


def _rotation(model: nn.Module, B: int, position: int, position_ids: Tensor | None,
              plan: _Plan) -> Tensor:
    """cos | sin (1 or B, DH) of the rotary embedding at this step, exactly as `rotary` forms them."""
    DH = plan.head_dim
    inv_freq = model.config.rope_theta ** (-torch.arange(0, DH, 2, dtype=torch.float32) / DH)
    if position_ids is None:
        angles = torch.tensor([[float(position)]]) * inv_freq
    else:
        angles = position_ids.reshape(B, 1).to(torch.float32) * inv_freq
    dtype = model.embedding.weight.dtype
    return torch.cat([angles.cos().to(dtype), angles.sin().to(dtype)], dim=-1)


def fused_step(model: nn.Module, input_ids: Tensor, state: list[Any], position: int,
               position_ids: Tensor | None = None, inplace: bool = False
               ) -> tuple[Tensor, Tensor, list[Any]] | None:
    """Logits (B, vocab), final hidden (B, d) and new block states for one token, or None.

    None means the weights and state are not all CPU tensors of one floating dtype (weights
    also contiguous), so the caller runs the generic forward. With `inplace` the new state
    overwrites the given tensors (a generation loop that owns its state saves allocating and
    faulting in new memory); blocks is then `state` itself.
    """
    ext = load()
    plan = _plan(model)
    B = input_ids.shape[0]
    if len(state) != len(plan.kinds):
        raise ValueError(f"state has {len(state)} entries for a stack of {len(plan.kinds)} blocks")
    flat = []
    for conv_state, cell in state:
        flat.append(conv_state)
        flat.extend(cell)
    rot = _rotation(model, B, position, position_ids, plan) if model.config.rope else _NO_ROTATION
    out = ext.step(input_ids.reshape(B).long(), *plan.ends, plan.weights, flat, plan.kinds, rot,
                   plan.eps, model.config.vocab_size, inplace)
    if not out:
        return None
    if len(out) == 2:  # updated in place
        return out[0], out[1], state
    blocks, i = [], 2
    for kind in plan.kinds:
        if kind:
            blocks.append((out[i], tuple(out[i + 1:i + 5])))
            i += 5
        else:
            blocks.append((out[i], tuple(out[i + 1:i + 4])))
            i += 4
    return out[0], out[1], blocks
