"""Optional fused CPU kernels of the mLSTM layer, in C++: the chunkwise cell and the work around it.

The cell (`mlstm_chunkwise_fused`) is `mlstm_chunkwise` in one pass: forward and backward each run
over (batch, head) in parallel and walk the chunks in order, so the chunk-layout copies, the decay
matrices and the elementwise temporaries of the PyTorch form never exist at full size; the matmuls
go to the BLAS that torch links, one thread per task. The backward is written by hand and
differentiates the stabilised arithmetic exactly, including the routing of the stabilisers'
gradients through their maxima, so it matches autograd through `mlstm_chunkwise`.

The pointwise work around the cell gets one pass each way instead of a chain of full-size
elementwise operators: the causal conv with its SiLU (`conv_silu_fused`), the small-block q/k/v
projections (`block_diagonal_fused`), and the per-head norm, skip and SiLU output gate
(`output_gate_fused`).

Built on first use with torch's inline extension loader and cached by torch. The cell calls the
MKL that torch's x86 wheels link; if the build or the load fails (e.g. a torch without MKL), or
BIOXLSTM_NO_EXTENSIONS=1 is set, `load()` returns None and the PyTorch code runs instead.
"""

from __future__ import annotations

import os
import sys
from functools import cache
from types import ModuleType

import torch
from torch import Tensor

from bioxlstm.layers.mlstm import EPS, MLSTMState, check_inputs, zero_state

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <vector>

extern "C" {
void SGEMM(const char*, const char*, const int*, const int*, const int*, const float*,
           const float*, const int*, const float*, const int*, const float*, float*, const int*);
void DGEMM(const char*, const char*, const int*, const int*, const int*, const double*,
           const double*, const int*, const double*, const int*, const double*, double*,
           const int*);
int MKL_Set_Num_Threads_Local(int);
}

// Each (batch, head) task runs its matmuls on one thread: the tasks already fill the cores.
struct SerialBlas {
  int prev;
  SerialBlas() : prev(MKL_Set_Num_Threads_Local(1)) {}
  ~SerialBlas() { MKL_Set_Num_Threads_Local(prev); }
};

static void blas(const char* ta, const char* tb, const int* m, const int* n, const int* k,
                 const float* al, const float* a, const int* lda, const float* b, const int* ldb,
                 const float* be, float* c, const int* ldc) {
  SGEMM(ta, tb, m, n, k, al, a, lda, b, ldb, be, c, ldc);
}
static void blas(const char* ta, const char* tb, const int* m, const int* n, const int* k,
                 const double* al, const double* a, const int* lda, const double* b,
                 const int* ldb, const double* be, double* c, const int* ldc) {
  DGEMM(ta, tb, m, n, k, al, a, lda, b, ldb, be, c, ldc);
}

// Row-major C (M x N) = alpha op(A) op(B) + beta C, op(A) M x K and op(B) K x N; ta/tb mean the
// operand is stored transposed. Column-major BLAS computes the transpose: C^T = op(B)^T op(A)^T.
template <typename T>
static void mm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
               int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  const char ca = tb ? 'T' : 'N', cb = ta ? 'T' : 'N';
  const int m = (int)N, n = (int)M, k = (int)K, la = (int)ldb, lb = (int)lda, lc = (int)ldc;
  blas(&ca, &cb, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
}

template <typename T> static inline T log_sigmoid(T x) {
  return std::min(x, T(0)) - std::log1p(std::exp(-std::abs(x)));
}
template <typename T> static inline T sigmoid_neg(T x) {  // sigmoid(-x)
  const T e = std::exp(-std::abs(x));
  return x >= 0 ? e / (T(1) + e) : T(1) / (T(1) + e);
}

// Strided (B, NH, S, D) operand with unit stride in D.
template <typename T> struct Seq {
  T* p; int64_t sb, sh, ss;
  T* at(int64_t b, int64_t h, int64_t t) const { return p + b * sb + h * sh + t * ss; }
};
template <typename T> static Seq<T> seq(const at::Tensor& x) {
  return {x.data_ptr<T>(), x.stride(0), x.stride(1), x.stride(2)};
}

// Per chunk: log forget gates lf, their inclusive cumulative sum bc, and the log decay matrix
// logd[t][j] = sum_{l=j+1..t} lf_l + i_j for j <= t, summed in the order of the torch form;
// dec is scratch for the running sums.
template <typename T>
static void chunk_gates(const T* fg, const T* ig, int64_t Lc, int64_t L, T* lf, T* bc, T* dec,
                        T* logd) {
  for (int64_t t = 0; t < Lc; ++t) {
    lf[t] = log_sigmoid(fg[t]);
    bc[t] = t ? bc[t - 1] + lf[t] : lf[t];
    T* row = logd + t * L;
    for (int64_t j = 0; j < t; ++j) {
      dec[j] = j + 1 < t ? dec[j] + lf[t] : lf[t];
      row[j] = dec[j] + ig[j];
    }
    row[t] = ig[t];
  }
}

template <typename T> static T row_max(const T* row, int64_t n) {
  T mx = row[0];
  for (int64_t j = 1; j < n; ++j) mx = std::max(mx, row[j]);
  return mx;
}

// Give grad to the maxima of row[0..n) the way autograd's amax does: split evenly over ties.
template <typename T> static void route_amax(const T* row, int64_t n, T mx, T grad, T* out) {
  int64_t cnt = 0;
  for (int64_t j = 0; j < n; ++j) cnt += row[j] == mx;
  for (int64_t j = 0; j < n; ++j)
    if (row[j] == mx) out[j] += grad / T(cnt);
}

// Split grad between the two arguments of maximum(x, y) as autograd does.
template <typename T> static void route_max2(T x, T y, T grad, T& gx, T& gy) {
  if (x > y) gx += grad;
  else if (y > x) gy += grad;
  else { gx += grad / 2; gy += grad / 2; }
}

template <typename T>
static void forward_bh(int64_t b, int64_t h, int64_t NH, int64_t S, int64_t L, int64_t DH,
                       int64_t DV, T eps, Seq<T> q, Seq<T> k, Seq<T> v, const T* ig_all,
                       const T* fg_all, const T* C0, const T* n0, const T* m0, Seq<T> hout,
                       T* Cs, T* ns, T* ms, T* mt_all, T* qn_all) {
  const int64_t bh = b * NH + h, NC = (S + L - 1) / L;
  const T alpha = T(1) / std::sqrt(T(DH));
  std::vector<T> logd(L * L), Sm(L * L), QC(L * DV), Kw(L * DH), lf(L), bc(L), dec(L), sw(L);
  T* C = Cs + bh * (NC + 1) * DH * DV;
  T* n = ns + bh * (NC + 1) * DH;
  T* m = ms + bh * (NC + 1);
  std::copy(C0 + bh * DH * DV, C0 + (bh + 1) * DH * DV, C);
  std::copy(n0 + bh * DH, n0 + (bh + 1) * DH, n);
  m[0] = m0[bh];
  for (int64_t c = 0; c < NC; ++c) {
    const int64_t t0 = c * L, Lc = std::min(L, S - t0);
    const T *Q = q.at(b, h, t0), *K = k.at(b, h, t0), *V = v.at(b, h, t0);
    const T *ig = ig_all + bh * S + t0, *fg = fg_all + bh * S + t0;
    T* mt = mt_all + bh * S + t0;
    T* qn = qn_all + bh * S + t0;
    T* H = hout.at(b, h, t0);
    const T* Cc = C + c * DH * DV;
    const T* nc = n + c * DH;
    const T m_in = m[c];
    chunk_gates(fg, ig, Lc, L, lf.data(), bc.data(), dec.data(), logd.data());
    mm<T>(false, true, Lc, Lc, DH, alpha, Q, q.ss, K, k.ss, T(0), Sm.data(), L);
    mm<T>(false, false, Lc, DV, DH, T(1), Q, q.ss, Cc, DV, T(0), QC.data(), DV);
    for (int64_t t = 0; t < Lc; ++t) {
      const T* ld = logd.data() + t * L;
      T* s = Sm.data() + t * L;
      const T ls = bc[t] + m_in;
      const T mx = std::max(row_max(ld, t + 1), ls);
      T sum = 0;
      for (int64_t j = 0; j <= t; ++j) { s[j] *= std::exp(ld[j] - mx); sum += s[j]; }
      for (int64_t j = t + 1; j < Lc; ++j) s[j] = T(0);
      sw[t] = std::exp(ls - mx);
      T qdot = 0;
      const T* qt = Q + t * q.ss;
      for (int64_t d = 0; d < DH; ++d) qdot += qt[d] * nc[d];
      mt[t] = mx;
      qn[t] = sum + sw[t] * qdot;
      T* ht = H + t * hout.ss;
      const T* qc = QC.data() + t * DV;
      for (int64_t e = 0; e < DV; ++e) ht[e] = sw[t] * qc[e];
    }
    mm<T>(false, false, Lc, DV, Lc, T(1), Sm.data(), L, V, v.ss, T(1), H, hout.ss);
    for (int64_t t = 0; t < Lc; ++t) {
      const T den = std::max(std::abs(qn[t]), std::exp(-mt[t])) + eps;
      T* ht = H + t * hout.ss;
      for (int64_t e = 0; e < DV; ++e) ht[e] /= den;
    }
    // the state after the chunk, stabilised by m_new
    const T* log_in = logd.data() + (Lc - 1) * L;
    const T g = bc[Lc - 1], a = row_max(log_in, Lc);
    const T m_new = std::max(g + m_in, a), ws = std::exp(g + m_in - m_new);
    T* Cn = C + (c + 1) * DH * DV;
    T* nn = n + (c + 1) * DH;
    for (int64_t x = 0; x < DH * DV; ++x) Cn[x] = ws * Cc[x];
    for (int64_t d = 0; d < DH; ++d) nn[d] = ws * nc[d];
    for (int64_t j = 0; j < Lc; ++j) {
      const T w = std::exp(log_in[j] - m_new) * alpha;
      const T* kj = K + j * k.ss;
      T* kw = Kw.data() + j * DH;
      for (int64_t d = 0; d < DH; ++d) { kw[d] = w * kj[d]; nn[d] += kw[d]; }
    }
    mm<T>(true, false, DH, DV, Lc, T(1), Kw.data(), DH, V, v.ss, T(1), Cn, DV);
    m[c + 1] = m_new;
  }
}

std::vector<at::Tensor> forward(at::Tensor q, at::Tensor k, at::Tensor v, at::Tensor i,
                                at::Tensor f, at::Tensor C0, at::Tensor n0, at::Tensor m0,
                                int64_t chunk, double eps) {
  const int64_t B = q.size(0), NH = q.size(1), S = q.size(2), DH = q.size(3), DV = v.size(3);
  const int64_t L = std::min(chunk, S), NC = (S + L - 1) / L;
  auto opts = q.options();
  auto hbuf = at::empty({B, S, NH, DV}, opts);
  auto hout = hbuf.transpose(1, 2);
  auto Cs = at::empty({B, NH, NC + 1, DH, DV}, opts);
  auto ns = at::empty({B, NH, NC + 1, DH}, opts);
  auto ms = at::empty({B, NH, NC + 1}, opts);
  auto mt = at::empty({B, NH, S}, opts), qn = at::empty({B, NH, S}, opts);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "mlstm_forward", [&] {
    auto sq = seq<scalar_t>(q), sk = seq<scalar_t>(k), sv = seq<scalar_t>(v);
    auto sh = seq<scalar_t>(hout);
    const scalar_t *ip = i.data_ptr<scalar_t>(), *fp = f.data_ptr<scalar_t>();
    const scalar_t *c0 = C0.data_ptr<scalar_t>(), *nz = n0.data_ptr<scalar_t>();
    const scalar_t* mz = m0.data_ptr<scalar_t>();
    scalar_t *cs = Cs.data_ptr<scalar_t>(), *nsp = ns.data_ptr<scalar_t>();
    scalar_t *msp = ms.data_ptr<scalar_t>(), *mtp = mt.data_ptr<scalar_t>();
    scalar_t* qnp = qn.data_ptr<scalar_t>();
    at::parallel_for(0, B * NH, 1, [&](int64_t begin, int64_t end) {
      SerialBlas serial;
      for (int64_t bh = begin; bh < end; ++bh)
        forward_bh<scalar_t>(bh / NH, bh % NH, NH, S, L, DH, DV, (scalar_t)eps, sq, sk, sv, ip,
                             fp, c0, nz, mz, sh, cs, nsp, msp, mtp, qnp);
    });
  });
  return {hout, Cs, ns, ms, mt, qn};
}

template <typename T>
static void backward_bh(int64_t b, int64_t h, int64_t NH, int64_t S, int64_t L, int64_t DH,
                        int64_t DV, T eps, Seq<T> q, Seq<T> k, Seq<T> v, const T* ig_all,
                        const T* fg_all, const T* Cs, const T* ns, const T* ms,
                        const T* mt_all, const T* qn_all, Seq<T> hs, Seq<T> dhs,
                        const T* dCe, const T* dne, const T* dme, Seq<T> dq, Seq<T> dk,
                        Seq<T> dv, T* di_all, T* df_all, T* dC0, T* dn0, T* dm0) {
  const int64_t bh = b * NH + h, NC = (S + L - 1) / L;
  const T alpha = T(1) / std::sqrt(T(DH));
  std::vector<T> logd(L * L), E(L * L), Sm(L * L), dS(L * L), QC(L * DV), dnum(L * DV),
      X(L * DV), G(L * DH), Kw(L * DH), lf(L), bc(L), dec(L), sw(L), db(L), dlin(L), dqn(L), dmt(L);
  std::vector<T> dC(dCe + bh * DH * DV, dCe + (bh + 1) * DH * DV), dCn(DH * DV);
  std::vector<T> dn(dne + bh * DH, dne + (bh + 1) * DH), dnn(DH);
  T dm = dme[bh];
  const T* Call = Cs + bh * (NC + 1) * DH * DV;
  const T* nall = ns + bh * (NC + 1) * DH;
  const T* mall = ms + bh * (NC + 1);
  for (int64_t c = NC - 1; c >= 0; --c) {
    const int64_t t0 = c * L, Lc = std::min(L, S - t0);
    const T *Q = q.at(b, h, t0), *K = k.at(b, h, t0), *V = v.at(b, h, t0);
    const T *ig = ig_all + bh * S + t0, *fg = fg_all + bh * S + t0;
    const T *mt = mt_all + bh * S + t0, *qn = qn_all + bh * S + t0;
    const T *Hc = hs.at(b, h, t0), *dH = dhs.at(b, h, t0);
    T *dQ = dq.at(b, h, t0), *dK = dk.at(b, h, t0), *dV = dv.at(b, h, t0);
    T *di = di_all + bh * S + t0, *df = df_all + bh * S + t0;
    const T *Cc = Call + c * DH * DV, *Cout = Cc + DH * DV;
    const T *nc = nall + c * DH, *nout = nc + DH;
    const T m_in = mall[c];
    chunk_gates(fg, ig, Lc, L, lf.data(), bc.data(), dec.data(), logd.data());
    std::fill(db.begin(), db.begin() + Lc, T(0));
    std::fill(dlin.begin(), dlin.begin() + Lc, T(0));
    T dmin = 0;

    // state update: C_out = ws C_in + sum_j w_j k_j v_j^T, m_out = max(g + m_in, max_j log_in)
    const T* log_in = logd.data() + (Lc - 1) * L;
    const T g = bc[Lc - 1], a = row_max(log_in, Lc);
    const T m_new = std::max(g + m_in, a), ws = std::exp(g + m_in - m_new);
    T dot_out = 0, dot_in = 0;
    for (int64_t x = 0; x < DH * DV; ++x) { dot_out += dC[x] * Cout[x]; dot_in += dC[x] * Cc[x]; }
    for (int64_t d = 0; d < DH; ++d) { dot_out += dn[d] * nout[d]; dot_in += dn[d] * nc[d]; }
    T dgm = 0, da = 0;
    route_max2(g + m_in, a, dm - dot_out, dgm, da);
    if (da != T(0)) route_amax(log_in, Lc, a, da, dlin.data());
    const T dg = dgm + ws * dot_in;
    dmin += dg;
    db[Lc - 1] += dg;
    mm<T>(false, true, Lc, DH, DV, T(1), V, v.ss, dC.data(), DV, T(0), G.data(), DH);
    for (int64_t j = 0; j < Lc; ++j) {
      const T w = std::exp(log_in[j] - m_new) * alpha;
      const T* kj = K + j * k.ss;
      T* gj = G.data() + j * DH;
      T* kw = Kw.data() + j * DH;
      T* dkj = dK + j * dk.ss;
      T s = 0;
      for (int64_t d = 0; d < DH; ++d) {
        const T gd = gj[d] + dn[d];
        s += kj[d] * gd;
        dkj[d] = w * gd;
        kw[d] = w * kj[d];
      }
      dlin[j] += w * s;
    }
    mm<T>(false, false, Lc, DV, DH, T(1), Kw.data(), DH, dC.data(), DV, T(0), dV, dv.ss);
    for (int64_t j = 0; j < Lc; ++j) {
      db[Lc - 1] += dlin[j];
      db[j] -= dlin[j];
      di[j] += dlin[j];
    }
    for (int64_t x = 0; x < DH * DV; ++x) dCn[x] = ws * dC[x];
    for (int64_t d = 0; d < DH; ++d) dnn[d] = ws * dn[d];

    // outputs: h = num / (max(|qn|, exp(-mt)) + eps); at fixed mt, then mt's own gradient,
    // which is eps * d(denominator) because num, qn and exp(-mt) all scale with exp(-mt)
    mm<T>(false, true, Lc, Lc, DH, alpha, Q, q.ss, K, k.ss, T(0), Sm.data(), L);
    mm<T>(false, false, Lc, DV, DH, T(1), Q, q.ss, Cc, DV, T(0), QC.data(), DV);
    for (int64_t t = 0; t < Lc; ++t) {
      const T* ld = logd.data() + t * L;
      T* s = Sm.data() + t * L;
      T* e = E.data() + t * L;
      for (int64_t j = 0; j <= t; ++j) { e[j] = std::exp(ld[j] - mt[t]); s[j] *= e[j]; }
      for (int64_t j = t + 1; j < Lc; ++j) { e[j] = T(0); s[j] = T(0); }
      sw[t] = std::exp(bc[t] + m_in - mt[t]);
      const T em = std::exp(-mt[t]), aq = std::abs(qn[t]);
      const T den = std::max(aq, em) + eps;
      const T* dht = dH + t * dhs.ss;
      const T* ht = Hc + t * hs.ss;
      T* dnt = dnum.data() + t * DV;
      T hd = 0;
      for (int64_t x = 0; x < DV; ++x) { dnt[x] = dht[x] / den; hd += dht[x] * ht[x]; }
      const T dden = -hd / den;
      const T sgn = qn[t] > 0 ? T(1) : (qn[t] < 0 ? T(-1) : T(0));
      dqn[t] = aq > em ? dden * sgn : (aq == em ? dden * sgn / 2 : T(0));
      dmt[t] = eps * dden;
    }
    mm<T>(false, true, Lc, Lc, DV, T(1), dnum.data(), DV, V, v.ss, T(0), dS.data(), L);
    for (int64_t t = 0; t < Lc; ++t) {
      const T* ld = logd.data() + t * L;
      const T* s = Sm.data() + t * L;
      const T* e = E.data() + t * L;
      T* ds = dS.data() + t * L;
      const T* qt = Q + t * q.ss;
      const T* dnt = dnum.data() + t * DV;
      const T* qc = QC.data() + t * DV;
      T dsw = 0, qdot = 0;
      for (int64_t x = 0; x < DV; ++x) dsw += dnt[x] * qc[x];
      for (int64_t d = 0; d < DH; ++d) qdot += qt[d] * nc[d];
      dsw += dqn[t] * qdot;
      T dls = dsw * sw[t];
      T rowsum = 0;
      for (int64_t j = 0; j <= t; ++j) {
        const T dsj = ds[j] + dqn[t];
        dlin[j] = dsj * s[j];
        ds[j] = dsj * e[j];
      }
      for (int64_t j = t + 1; j < Lc; ++j) ds[j] = T(0);
      const T ls = bc[t] + m_in, mx = row_max(ld, t + 1);
      T dmx = 0;
      route_max2(mx, ls, dmt[t], dmx, dls);
      if (dmx != T(0)) route_amax(ld, t + 1, mx, dmx, dlin.data());
      for (int64_t j = 0; j <= t; ++j) {
        di[j] += dlin[j];
        rowsum += dlin[j];
        db[j] -= dlin[j];
      }
      db[t] += rowsum + dls;
      dmin += dls;
      T* xt = X.data() + t * DV;
      for (int64_t x = 0; x < DV; ++x) xt[x] = sw[t] * dnt[x];
      const T sq = sw[t] * dqn[t];
      for (int64_t d = 0; d < DH; ++d) dnn[d] += sq * qt[d];
    }
    mm<T>(false, false, Lc, DH, Lc, alpha, dS.data(), L, K, k.ss, T(0), dQ, dq.ss);
    mm<T>(true, false, Lc, DH, Lc, alpha, dS.data(), L, Q, q.ss, T(1), dK, dk.ss);
    mm<T>(false, true, Lc, DH, DV, T(1), X.data(), DV, Cc, DV, T(1), dQ, dq.ss);
    for (int64_t t = 0; t < Lc; ++t) {
      const T sq = sw[t] * dqn[t];
      T* dqt = dQ + t * dq.ss;
      for (int64_t d = 0; d < DH; ++d) dqt[d] += sq * nc[d];
    }
    mm<T>(true, false, DH, DV, Lc, T(1), Q, q.ss, X.data(), DV, T(1), dCn.data(), DV);
    mm<T>(true, false, Lc, DV, Lc, T(1), Sm.data(), L, dnum.data(), DV, T(1), dV, dv.ss);
    // b = cumsum(lf), lf = logsigmoid(f)
    T acc = 0;
    for (int64_t t = Lc - 1; t >= 0; --t) { acc += db[t]; df[t] = acc * sigmoid_neg(fg[t]); }
    dC.swap(dCn);
    dn.swap(dnn);
    dm = dmin;
  }
  std::copy(dC.begin(), dC.end(), dC0 + bh * DH * DV);
  std::copy(dn.begin(), dn.end(), dn0 + bh * DH);
  dm0[bh] = dm;
}

std::vector<at::Tensor> backward(at::Tensor q, at::Tensor k, at::Tensor v, at::Tensor i,
                                 at::Tensor f, at::Tensor Cs, at::Tensor ns, at::Tensor ms,
                                 at::Tensor mt, at::Tensor qn, at::Tensor h, at::Tensor dh,
                                 at::Tensor dC, at::Tensor dn, at::Tensor dm, int64_t chunk,
                                 double eps) {
  const int64_t B = q.size(0), NH = q.size(1), S = q.size(2), DH = q.size(3), DV = v.size(3);
  const int64_t L = std::min(chunk, S);
  auto opts = q.options();
  auto dq = at::empty({B, S, NH, DH}, opts).transpose(1, 2);
  auto dk = at::empty({B, S, NH, DH}, opts).transpose(1, 2);
  auto dv = at::empty({B, S, NH, DV}, opts).transpose(1, 2);
  auto di = at::zeros({B, NH, S}, opts), df = at::empty({B, NH, S}, opts);
  auto dC0 = at::empty({B, NH, DH, DV}, opts), dn0 = at::empty({B, NH, DH}, opts);
  auto dm0 = at::empty({B, NH}, opts);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "mlstm_backward", [&] {
    auto sq = seq<scalar_t>(q), sk = seq<scalar_t>(k), sv = seq<scalar_t>(v);
    auto sh = seq<scalar_t>(h), sdh = seq<scalar_t>(dh);
    auto sdq = seq<scalar_t>(dq), sdk = seq<scalar_t>(dk), sdv = seq<scalar_t>(dv);
    const scalar_t *ip = i.data_ptr<scalar_t>(), *fp = f.data_ptr<scalar_t>();
    const scalar_t *cs = Cs.data_ptr<scalar_t>(), *nsp = ns.data_ptr<scalar_t>();
    const scalar_t *msp = ms.data_ptr<scalar_t>(), *mtp = mt.data_ptr<scalar_t>();
    const scalar_t* qnp = qn.data_ptr<scalar_t>();
    const scalar_t *dCe = dC.data_ptr<scalar_t>(), *dne = dn.data_ptr<scalar_t>();
    const scalar_t* dme = dm.data_ptr<scalar_t>();
    scalar_t *dip = di.data_ptr<scalar_t>(), *dfp = df.data_ptr<scalar_t>();
    scalar_t *dc0 = dC0.data_ptr<scalar_t>(), *dnz = dn0.data_ptr<scalar_t>();
    scalar_t* dmz = dm0.data_ptr<scalar_t>();
    at::parallel_for(0, B * NH, 1, [&](int64_t begin, int64_t end) {
      SerialBlas serial;
      for (int64_t bh = begin; bh < end; ++bh)
        backward_bh<scalar_t>(bh / NH, bh % NH, NH, S, L, DH, DV, (scalar_t)eps, sq, sk, sv, ip,
                              fp, cs, nsp, msp, mtp, qnp, sh, sdh, dCe, dne, dme, sdq, sdk, sdv,
                              dip, dfp, dc0, dnz, dmz);
    });
  });
  return {dq, dk, dv, di, df, dC0, dn0, dm0};
}

// The mLSTM layer's output gate on N token rows of width D = NH * DH:
// y = (LN_heads(h) * (1 + w) + skip * c) * silu(z); mean and rstd per (row, head) are kept.
// Row strides: h, c and z may be views (z is half of the up-projection).
std::vector<at::Tensor> gate_forward(at::Tensor h, at::Tensor c, at::Tensor z, at::Tensor w,
                                     at::Tensor skip, int64_t NH, double eps) {
  const int64_t N = h.size(0), D = h.size(1), DH = D / NH;
  auto y = at::empty({N, D}, h.options());
  auto mean = at::empty({N, NH}, h.options()), rstd = at::empty({N, NH}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "mlstm_gate_forward", [&] {
    using T = scalar_t;
    const T *hp = h.data_ptr<T>(), *cp = c.data_ptr<T>(), *zp = z.data_ptr<T>();
    const T *wp = w.data_ptr<T>(), *sp = skip.data_ptr<T>();
    T *yp = y.data_ptr<T>(), *mp = mean.data_ptr<T>(), *rp = rstd.data_ptr<T>();
    const int64_t sh = h.stride(0), sc = c.stride(0), sz = z.stride(0);
    at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const T *hr = hp + r * sh, *cr = cp + r * sc, *zr = zp + r * sz;
        T* yr = yp + r * D;
        for (int64_t g = 0; g < NH; ++g) {
          const T* x = hr + g * DH;
          T mu = 0, var = 0;
          for (int64_t d = 0; d < DH; ++d) mu += x[d];
          mu /= T(DH);
          for (int64_t d = 0; d < DH; ++d) var += (x[d] - mu) * (x[d] - mu);
          const T rs = T(1) / std::sqrt(var / T(DH) + T(eps));
          mp[r * NH + g] = mu;
          rp[r * NH + g] = rs;
          for (int64_t d = g * DH; d < (g + 1) * DH; ++d) {
            const T gv = (hr[d] - mu) * rs * (T(1) + wp[d]) + sp[d] * cr[d];
            yr[d] = gv * zr[d] / (T(1) + std::exp(-zr[d]));
          }
        }
      }
    });
  });
  return {y, mean, rstd};
}

// Gradients of gate_forward: dh, dc, dz (N, D) and dw, dskip (D).
std::vector<at::Tensor> gate_backward(at::Tensor dy, at::Tensor h, at::Tensor c, at::Tensor z,
                                      at::Tensor w, at::Tensor skip, at::Tensor mean,
                                      at::Tensor rstd) {
  const int64_t N = h.size(0), D = h.size(1), NH = mean.size(1), DH = D / NH;
  auto dh = at::empty({N, D}, h.options()), dc = at::empty({N, D}, h.options());
  auto dz = at::empty({N, D}, h.options());
  const int64_t nt = at::get_num_threads();
  auto partial = at::zeros({nt, 2, D}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "mlstm_gate_backward", [&] {
    using T = scalar_t;
    const T *hp = h.data_ptr<T>(), *cp = c.data_ptr<T>(), *zp = z.data_ptr<T>();
    const T *wp = w.data_ptr<T>(), *sp = skip.data_ptr<T>(), *gp = dy.data_ptr<T>();
    const T *mp = mean.data_ptr<T>(), *rp = rstd.data_ptr<T>();
    T *dhp = dh.data_ptr<T>(), *dcp = dc.data_ptr<T>(), *dzp = dz.data_ptr<T>();
    T* pp = partial.data_ptr<T>();
    const int64_t sh = h.stride(0), sc = c.stride(0), sz = z.stride(0), sg = dy.stride(0);
    at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
      T* dw = pp + at::get_thread_num() * 2 * D;
      T* dskip = dw + D;
      std::vector<T> dxh(DH), xh(DH);
      for (int64_t r = begin; r < end; ++r) {
        const T *hr = hp + r * sh, *cr = cp + r * sc, *zr = zp + r * sz, *gr = gp + r * sg;
        for (int64_t g = 0; g < NH; ++g) {
          const T mu = mp[r * NH + g], rs = rp[r * NH + g];
          T s1 = 0, s2 = 0;
          for (int64_t e = 0; e < DH; ++e) {
            const int64_t d = g * DH + e;
            const T x = (hr[d] - mu) * rs, sig = T(1) / (T(1) + std::exp(-zr[d]));
            const T gv = x * (T(1) + wp[d]) + sp[d] * cr[d];
            const T dg = gr[d] * zr[d] * sig;
            dzp[r * D + d] = gr[d] * gv * sig * (T(1) + zr[d] * (T(1) - sig));
            dskip[d] += dg * cr[d];
            dcp[r * D + d] = dg * sp[d];
            dw[d] += dg * x;
            xh[e] = x;
            dxh[e] = dg * (T(1) + wp[d]);
            s1 += dxh[e];
            s2 += dxh[e] * x;
          }
          s1 /= T(DH);
          s2 /= T(DH);
          T* out = dhp + r * D + g * DH;
          for (int64_t e = 0; e < DH; ++e) out[e] = rs * (dxh[e] - s1 - xh[e] * s2);
        }
      }
    });
  });
  auto sums = partial.sum(0);
  return {dh, dc, dz, sums[0], sums[1]};
}

// Block-diagonal linear map on N rows: y[n, g bs + o] = sum_i x[n, g bs + i] W[g, o, i], for the
// small q/k/v blocks; x may have a row stride (a view of a wider activation). BS > 0 fixes the
// block size at compile time so the inner loops unroll; BS = 0 reads it at run time.
template <typename T, int64_t BS>
static void block_rows(const T* xp, int64_t sx, const T* wp, T* yp, int64_t nb, int64_t rbs,
                       int64_t begin, int64_t end) {
  const int64_t bs = BS ? BS : rbs, D = nb * bs;
  for (int64_t n = begin; n < end; ++n) {
    const T* xr = xp + n * sx;
    T* yr = yp + n * D;
    for (int64_t g = 0; g < nb; ++g) {
      const T* xg = xr + g * bs;
      const T* wg = wp + g * bs * bs;
      for (int64_t o = 0; o < bs; ++o) {
        T acc = xg[0] * wg[o * bs];
        for (int64_t i = 1; i < bs; ++i) acc += xg[i] * wg[o * bs + i];
        yr[g * bs + o] = acc;
      }
    }
  }
}

template <typename T, int64_t BS>
static void block_grad_rows(const T* xp, int64_t sx, const T* gp, int64_t sg, const T* wp,
                            T* dxp, T* dW, int64_t nb, int64_t rbs, int64_t begin, int64_t end) {
  const int64_t bs = BS ? BS : rbs, D = nb * bs;
  for (int64_t n = begin; n < end; ++n) {
    const T *xr = xp + n * sx, *gr = gp + n * sg;
    T* dr = dxp + n * D;
    for (int64_t g = 0; g < nb; ++g) {
      const T *xg = xr + g * bs, *gg = gr + g * bs, *wg = wp + g * bs * bs;
      T* dwg = dW + g * bs * bs;
      for (int64_t i = 0; i < bs; ++i) {
        T acc = gg[0] * wg[i];
        for (int64_t o = 1; o < bs; ++o) acc += gg[o] * wg[o * bs + i];
        dr[g * bs + i] = acc;
      }
      for (int64_t o = 0; o < bs; ++o)
        for (int64_t i = 0; i < bs; ++i) dwg[o * bs + i] += gg[o] * xg[i];
    }
  }
}

at::Tensor block_forward(at::Tensor x, at::Tensor W) {
  const int64_t N = x.size(0), nb = W.size(0), bs = W.size(1);
  auto y = at::empty({N, nb * bs}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "block_forward", [&] {
    using T = scalar_t;
    const T *xp = x.data_ptr<T>(), *wp = W.data_ptr<T>();
    T* yp = y.data_ptr<T>();
    const int64_t sx = x.stride(0);
    at::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) {
      if (bs == 4) block_rows<T, 4>(xp, sx, wp, yp, nb, bs, begin, end);
      else block_rows<T, 0>(xp, sx, wp, yp, nb, bs, begin, end);
    });
  });
  return y;
}

// Gradients of block_forward: dx (N, D) and dW (nb, bs, bs), the latter from per-thread sums.
std::vector<at::Tensor> block_backward(at::Tensor dy, at::Tensor x, at::Tensor W) {
  const int64_t N = x.size(0), nb = W.size(0), bs = W.size(1);
  auto dx = at::empty({N, nb * bs}, x.options());
  auto partial = at::zeros({at::get_num_threads(), nb * bs * bs}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "block_backward", [&] {
    using T = scalar_t;
    const T *xp = x.data_ptr<T>(), *wp = W.data_ptr<T>(), *gp = dy.data_ptr<T>();
    T *dxp = dx.data_ptr<T>(), *pp = partial.data_ptr<T>();
    const int64_t sx = x.stride(0), sg = dy.stride(0);
    at::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) {
      T* dW = pp + at::get_thread_num() * nb * bs * bs;
      if (bs == 4) block_grad_rows<T, 4>(xp, sx, gp, sg, wp, dxp, dW, nb, bs, begin, end);
      else block_grad_rows<T, 0>(xp, sx, gp, sg, wp, dxp, dW, nb, bs, begin, end);
    });
  });
  return {dx, partial.sum(0).view({nb, bs, bs})};
}

// SiLU of the causal depthwise conv: c[b, t] = silu(bias + sum_k w[:, k] xp[b, t + k]) where xp is
// the K - 1 state rows followed by x (B, S, D; x may be a row-strided view).
template <typename T>
static inline const T* conv_row(const T* xp, int64_t sxb, int64_t sxs, const T* st, int64_t K,
                                int64_t D, int64_t b, int64_t j) {
  return j < K - 1 ? st + (b * (K - 1) + j) * D : xp + b * sxb + (j - K + 1) * sxs;
}

at::Tensor conv_silu_forward(at::Tensor x, at::Tensor state, at::Tensor w, at::Tensor bias) {
  const int64_t B = x.size(0), S = x.size(1), D = x.size(2), K = w.size(1);
  auto c = at::empty({B, S, D}, x.options());
  auto wt = w.t().contiguous();  // (K, D)
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv_silu_forward", [&] {
    using T = scalar_t;
    const T *xp = x.data_ptr<T>(), *st = state.data_ptr<T>(), *wp = wt.data_ptr<T>();
    const T* bp = bias.data_ptr<T>();
    T* cp = c.data_ptr<T>();
    const int64_t sxb = x.stride(0), sxs = x.stride(1);
    at::parallel_for(0, B * S, 16, [&](int64_t begin, int64_t end) {
      std::vector<T> acc(D);
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r / S, t = r % S;
        const T* x0 = conv_row(xp, sxb, sxs, st, K, D, b, t);
        for (int64_t d = 0; d < D; ++d) acc[d] = bp[d] + x0[d] * wp[d];
        for (int64_t k = 1; k < K; ++k) {
          const T* xk = conv_row(xp, sxb, sxs, st, K, D, b, t + k);
          const T* wk = wp + k * D;
          for (int64_t d = 0; d < D; ++d) acc[d] += xk[d] * wk[d];
        }
        T* cr = cp + r * D;
        for (int64_t d = 0; d < D; ++d) cr[d] = acc[d] / (T(1) + std::exp(-acc[d]));
      }
    });
  });
  return c;
}

// Gradients of conv_silu_forward: dx (B, S, D), dstate (B, K - 1, D), dw (D, K), dbias (D).
std::vector<at::Tensor> conv_silu_backward(at::Tensor dc, at::Tensor x, at::Tensor state,
                                           at::Tensor w, at::Tensor bias) {
  const int64_t B = x.size(0), S = x.size(1), D = x.size(2), K = w.size(1);
  auto dpre = at::empty({B, S, D}, x.options());
  auto dx = at::empty({B, S, D}, x.options()), dstate = at::empty({B, K - 1, D}, x.options());
  auto wt = w.t().contiguous();
  const int64_t nt = at::get_num_threads();
  auto partial = at::zeros({nt, K + 1, D}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv_silu_backward", [&] {
    using T = scalar_t;
    const T *xp = x.data_ptr<T>(), *st = state.data_ptr<T>(), *wp = wt.data_ptr<T>();
    const T *bp = bias.data_ptr<T>(), *gp = dc.data_ptr<T>();
    T *pre = dpre.data_ptr<T>(), *dxp = dx.data_ptr<T>(), *dsp = dstate.data_ptr<T>();
    T* pp = partial.data_ptr<T>();
    const int64_t sxb = x.stride(0), sxs = x.stride(1), sgb = dc.stride(0), sgs = dc.stride(1);
    // pass 1: the gradient at the conv output, and the weight and bias sums
    at::parallel_for(0, B * S, 16, [&](int64_t begin, int64_t end) {
      T* dwp = pp + at::get_thread_num() * (K + 1) * D;
      T* dbp = dwp + K * D;
      std::vector<T> acc(D);
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r / S, t = r % S;
        const T* x0 = conv_row(xp, sxb, sxs, st, K, D, b, t);
        for (int64_t d = 0; d < D; ++d) acc[d] = bp[d] + x0[d] * wp[d];
        for (int64_t k = 1; k < K; ++k) {
          const T* xk = conv_row(xp, sxb, sxs, st, K, D, b, t + k);
          const T* wk = wp + k * D;
          for (int64_t d = 0; d < D; ++d) acc[d] += xk[d] * wk[d];
        }
        const T* gr = gp + b * sgb + t * sgs;
        T* pr = pre + r * D;
        for (int64_t d = 0; d < D; ++d) {
          const T sig = T(1) / (T(1) + std::exp(-acc[d]));
          pr[d] = gr[d] * sig * (T(1) + acc[d] * (T(1) - sig));
          dbp[d] += pr[d];
        }
        for (int64_t k = 0; k < K; ++k) {
          const T* xk = conv_row(xp, sxb, sxs, st, K, D, b, t + k);
          T* dwk = dwp + k * D;
          for (int64_t d = 0; d < D; ++d) dwk[d] += pr[d] * xk[d];
        }
      }
    });
    // pass 2: each padded input row j collects w[:, k] * dpre[j - k]
    at::parallel_for(0, B * (S + K - 1), 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r / (S + K - 1), j = r % (S + K - 1);
        T* out = j < K - 1 ? dsp + (b * (K - 1) + j) * D : dxp + (b * S + j - K + 1) * D;
        std::fill(out, out + D, T(0));
        for (int64_t k = 0; k < K; ++k) {
          const int64_t t = j - k;
          if (t < 0 || t >= S) continue;
          const T* pr = pre + (b * S + t) * D;
          const T* wk = wp + k * D;
          for (int64_t d = 0; d < D; ++d) out[d] += wk[d] * pr[d];
        }
      }
    });
  });
  auto sums = partial.sum(0);
  return {dx, dstate, sums.narrow(0, 0, K).t().contiguous(), sums[K]};
}
"""


@cache
def load() -> ModuleType | None:
    """The compiled module, built once per machine and cached by torch; None if unavailable."""
    if os.environ.get("BIOXLSTM_NO_EXTENSIONS") == "1":
        return None
    try:
        from torch.utils.cpp_extension import load_inline

        return load_inline(name="bioxlstm_mlstm_cpu_v8", cpp_sources=[_SOURCE],
                           functions=["forward", "backward", "gate_forward", "gate_backward",
                                      "block_forward", "block_backward", "conv_silu_forward",
                                      "conv_silu_backward"],
                           extra_cflags=["-O3", "-fopenmp"], extra_ldflags=["-fopenmp"])
    except Exception as err:  # any build failure means: use the PyTorch code
        print(f"bioxlstm: mLSTM CPU kernels unavailable, using PyTorch code ({err})"[:300],
              file=sys.stderr)
        return None


def _unit_last(x: Tensor) -> Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


class _FusedChunkwise(torch.autograd.Function):
    """The chunkwise cell and its exact gradient, both in the compiled kernel."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, C0: Tensor,
                n0: Tensor, m0: Tensor, chunk_size: int, eps: float):
        h, Cs, ns, ms, mt, qn = load().forward(q, k, v, i, f, C0, n0, m0, chunk_size, eps)
        ctx.save_for_backward(q, k, v, i, f, Cs, ns, ms, mt, qn, h)
        ctx.chunk_size, ctx.eps = chunk_size, eps
        return h, Cs[:, :, -1].clone(), ns[:, :, -1].clone(), ms[:, :, -1].clone()

    @staticmethod
    def backward(ctx, dh: Tensor, dC: Tensor, dn: Tensor, dm: Tensor):
        q, k, v, i, f, Cs, ns, ms, mt, qn, h = ctx.saved_tensors
        grads = load().backward(q, k, v, i, f, Cs, ns, ms, mt, qn, h, _unit_last(dh),
                                dC.contiguous(), dn.contiguous(), dm.contiguous(),
                                ctx.chunk_size, ctx.eps)
        return (*grads, None, None)


class _FusedOutputGate(torch.autograd.Function):
    """(LN_heads(h) * (1 + w) + skip * c) * silu(z) on (N, D) rows, one pass each way."""

    @staticmethod
    def forward(ctx, h: Tensor, c: Tensor, z: Tensor, w: Tensor, skip: Tensor, num_heads: int,
                eps: float):
        y, mean, rstd = load().gate_forward(h, c, z, w, skip, num_heads, eps)
        ctx.save_for_backward(h, c, z, w, skip, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        dh, dc, dz, dw, dskip = load().gate_backward(_unit_last(dy), *ctx.saved_tensors)
        return dh, dc, dz, dw, dskip, None, None


class _BlockDiagonal(torch.autograd.Function):
    """x (N, D) times a block-diagonal W (nb, bs, bs), one pass each way."""

    @staticmethod
    def forward(ctx, x: Tensor, W: Tensor):
        ctx.save_for_backward(x, W)
        return load().block_forward(x, W)

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, W = ctx.saved_tensors
        return tuple(load().block_backward(_unit_last(dy), x, W.contiguous()))


def block_diagonal_fused(x: Tensor, W: Tensor) -> Tensor:
    """y[..., g, o] = sum_i x[..., g, i] W[g, o, i] for x (..., nb * bs) and W (nb, bs, bs).

    For the small q/k/v blocks: one compiled pass over the rows instead of block-size
    multiply-add passes, and a weight gradient without full-size temporaries.
    """
    rows = _unit_last(x.reshape(-1, x.shape[-1]))
    return _BlockDiagonal.apply(rows, W.contiguous()).view(x.shape)


class _ConvSiLU(torch.autograd.Function):
    """silu(causal depthwise conv) of x (B, S, D) after K - 1 state rows, one pass each way."""

    @staticmethod
    def forward(ctx, x: Tensor, state: Tensor, w: Tensor, b: Tensor):
        ctx.save_for_backward(x, state, w, b)
        return load().conv_silu_forward(x, state, w, b)

    @staticmethod
    def backward(ctx, dc: Tensor):
        return tuple(load().conv_silu_backward(_unit_last(dc), *ctx.saved_tensors))


def conv_silu_fused(x: Tensor, state: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """silu(CausalConv1d(x)) for x (B, S, D), state (B, K - 1, D), weight (D, K), bias (D).

    One compiled pass each way instead of a concatenation, K multiply-add passes and the SiLU,
    and a backward without per-tap full-size temporaries.
    """
    return _ConvSiLU.apply(_unit_last(x), state.contiguous(), weight.contiguous(),
                           bias.contiguous())


def kernels_supported(*tensors: Tensor) -> bool:
    """Whether the gate and block kernels can run these tensors: CPU, one float32/64 dtype, built."""
    dtype = tensors[0].dtype
    return (dtype in (torch.float32, torch.float64)
            and all(t.device.type == "cpu" and t.dtype == dtype for t in tensors)
            and load() is not None)


def output_gate_fused(h: Tensor, c: Tensor, z: Tensor, norm_weight: Tensor, skip: Tensor,
                      eps: float) -> Tensor:
    """(MultiHeadNorm(h) + skip * c) * silu(z) for h (B, S, NH, DH), c and z (B, S, NH * DH).

    The mLSTM layer's output gate as one compiled pass forward and one backward, instead of
    about a dozen full-size elementwise passes and their temporaries.
    """
    B, S, NH, DH = h.shape
    rows = [_unit_last(t.reshape(B * S, NH * DH)) for t in (h, c, z)]
    y = _FusedOutputGate.apply(*rows, norm_weight, skip, NH, float(eps))
    return y.view(B, S, NH * DH)


def fused_supported(q: Tensor, k: Tensor, v: Tensor, state: MLSTMState | None) -> bool:
    """Whether `mlstm_chunkwise_fused` can run these inputs: CPU, float32/64, and a built kernel."""
    tensors = [q, k, v, *(state or ())]
    return (q.dim() == 4 and q.numel() > 0 and v.numel() > 0 and q.dtype in (torch.float32, torch.float64)
            and all(t.device.type == "cpu" and t.dtype == q.dtype for t in tensors)
            and load() is not None)


def mlstm_chunkwise_fused(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    i: Tensor,
    f: Tensor,
    state: MLSTMState | None = None,
    chunk_size: int = 64,
    eps: float = EPS,
) -> tuple[Tensor, MLSTMState]:
    """`mlstm_chunkwise(..., return_state=True)` through the compiled kernel (see module doc).

    The output h has the memory layout (B, S, NH, DH), so h.transpose(1, 2) is contiguous.
    """
    check_inputs(q, k, v, i, f)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    C0, n0, m0 = zero_state(q, v) if state is None else state
    B, NH, _, DH = q.shape
    shapes = (B, NH, DH, v.shape[-1]), (B, NH, DH), (B, NH)
    if (C0.shape, n0.shape, m0.shape) != shapes:
        raise ValueError(f"mLSTM state must have shapes {shapes}; got "
                         f"{tuple(C0.shape), tuple(n0.shape), tuple(m0.shape)}")
    dt = q.dtype
    h, C, n, m = _FusedChunkwise.apply(
        _unit_last(q), _unit_last(k), _unit_last(v), i.to(dt).contiguous(),
        f.to(dt).contiguous(), C0.contiguous(), n0.contiguous(), m0.contiguous(), chunk_size,
        float(eps))
    return h, (C, n, m)

