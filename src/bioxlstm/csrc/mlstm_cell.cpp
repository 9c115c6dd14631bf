// The chunkwise mLSTM cell, forward and backward: each (batch, head) walks its chunks in order,
// the matmuls on the BLAS that torch links, one thread per task, skipping the zero block of each
// causal score matrix; the backward differentiates the stabilised arithmetic exactly
// (layers/mlstm_cpu.py).
#include <torch/extension.h>
#include "bioxlstm_common.h"

#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

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

// Products with the causal (lower-triangular) n x n score matrices, split into 2 x 2 blocks at
// a = n / 2 so the block above the diagonal, all zeros, is skipped: 3/4 of the work.
// Lower part of C = alpha A B^T (A, B n x K); the block above the diagonal is left unwritten.
template <typename T>
static void tril_abt(int64_t n, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
                     int64_t ldb, T* C, int64_t ldc) {
  const int64_t a = n / 2;
  mm<T>(false, true, a, a, K, alpha, A, lda, B, ldb, T(0), C, ldc);
  mm<T>(false, true, n - a, n, K, alpha, A + a * lda, lda, B, ldb, T(0), C + a * ldc, ldc);
}
// C = alpha op(M) B + beta C for a lower-triangular M (n x n), op(M) = M^T if tm; B n x N.
template <typename T>
static void tril_mm(bool tm, int64_t n, int64_t N, T alpha, const T* M, int64_t ldm, const T* B,
                    int64_t ldb, T beta, T* C, int64_t ldc) {
  const int64_t a = n / 2;
  if (tm) {
    mm<T>(true, false, a, N, n, alpha, M, ldm, B, ldb, beta, C, ldc);
    mm<T>(true, false, n - a, N, n - a, alpha, M + a * ldm + a, ldm, B + a * ldb, ldb, beta,
          C + a * ldc, ldc);
  } else {
    mm<T>(false, false, a, N, a, alpha, M, ldm, B, ldb, beta, C, ldc);
    mm<T>(false, false, n - a, N, n, alpha, M + a * ldm, ldm, B, ldb, beta, C + a * ldc, ldc);
  }
}

// sigmoid(-x), the derivative of log sigmoid(x). Not `sigmoid_stable(-x)` always inlined: GCC
// compiles the backward differently then.
template <typename T> static inline T sigmoid_neg(T x) {
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
static BX_INLINE void chunk_gates(const T* fg, const T* ig, int64_t Lc, int64_t L, T* lf,
                                  T* bc, T* dec, T* logd) {
#pragma omp simd
  for (int64_t t = 0; t < Lc; ++t) lf[t] = log_sigmoid(fg[t]);
  for (int64_t t = 0; t < Lc; ++t) {
    bc[t] = t ? bc[t - 1] + lf[t] : lf[t];
    T* row = logd + t * L;
#pragma omp simd
    for (int64_t j = 0; j < t - 1; ++j) dec[j] += lf[t];
    if (t) dec[t - 1] = lf[t];
#pragma omp simd
    for (int64_t j = 0; j < t; ++j) row[j] = dec[j] + ig[j];
    row[t] = ig[t];
  }
}

// max of row[0..n), n >= 1, in kPartialSums interleaved partial maxima so the loop vectorises
template <typename T> static BX_INLINE T row_max(const T* row, int64_t n) {
  T acc[kPartialSums];
  for (int64_t l = 0; l < kPartialSums; ++l) acc[l] = row[0];
  int64_t j = 0;
  for (; j + kPartialSums <= n; j += kPartialSums)
    for (int64_t l = 0; l < kPartialSums; ++l) acc[l] = acc[l] > row[j + l] ? acc[l] : row[j + l];
  T mx = row[0];
  for (; j < n; ++j) mx = std::max(mx, row[j]);
  for (int64_t l = 0; l < kPartialSums; ++l) mx = std::max(mx, acc[l]);
  return mx;
}

// Entries [0, t] of a causal row, rounded up to whole vectors (at most n): loops over them with
// the entries past t masked run without a scalar remainder, whose exp calls cost more than the
// vectorised ones.
static BX_INLINE int64_t causal_span(int64_t t, int64_t n) {
  return std::min(n, (t + kPartialSums) / kPartialSums * kPartialSums);
}

// y[0..n) = a * x[0..n)
template <typename T> static BX_INLINE void scale(T a, const T* x, int64_t n, T* y) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) y[j] = a * x[j];
}

// Start loading rows [0, rows) of a (B, NH, S, D) operand into cache (for writing if write), to
// have the next chunk's rows ready: one head's rows lie NH * D apart, a pattern the hardware
// prefetchers do not follow across pages.
template <typename T, bool write = false>
static BX_INLINE void prefetch_rows(const T* p, int64_t ss, int64_t rows, int64_t n) {
  constexpr int64_t line = 64 / sizeof(T);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t x = 0; x < n; x += line) __builtin_prefetch(p + r * ss + x, write, 2);
}

// y[0..n) = x[0..n) with stores that bypass the cache where the CPU has them (x86-64), for data
// this pass does not read again (the chunk states, the gradients): an ordinary store to a line not
// in cache first reads it from memory. Call store_fence() before another thread reads y.
template <typename T> static void copy_uncached(const T* x, int64_t n, T* y) {
  size_t bytes = n * sizeof(T);
  char* d = reinterpret_cast<char*>(y);
  const char* s = reinterpret_cast<const char*>(x);
#if defined(__x86_64__)
  const size_t head = std::min(bytes, size_t(-reinterpret_cast<uintptr_t>(d) & 15));
  std::memcpy(d, s, head);
  d += head, s += head, bytes -= head;
  for (; bytes >= 16; bytes -= 16, d += 16, s += 16)
    _mm_stream_si128(reinterpret_cast<__m128i*>(d),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(s)));
#endif
  std::memcpy(d, s, bytes);
}
static inline void store_fence() {
#if defined(__x86_64__)
  _mm_sfence();
#endif
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
BX_CLONES static void forward_bh(int64_t b, int64_t h, int64_t NH, int64_t S, int64_t L,
                                 int64_t DH, int64_t DV, T eps, Seq<T> q, Seq<T> k, Seq<T> v,
                                 const T* ig_all, const T* fg_all, const T* C0, const T* n0,
                                 const T* m0, Seq<T> hout, T* Cs, T* ns, T* ms, T* mt_all,
                                 T* qn_all, T* Ss, bool keep) {
  const int64_t bh = b * NH + h, NC = (S + L - 1) / L;
  const T alpha = T(1) / std::sqrt(T(DH));
  std::vector<T> logd(L * L), Kw(L * DH), lf(L), bc(L), dec(L), w(L);
  // the state is updated in place in Cw, which stays in cache; each chunk's copy goes to Cs
  // (only the last one unless the backward will need them all)
  std::vector<T> Cw(C0 + bh * DH * DV, C0 + (bh + 1) * DH * DV);
  T* C = Cs + bh * (keep ? NC + 1 : 1) * DH * DV;
  T* n = ns + bh * (NC + 1) * DH;
  T* m = ms + bh * (NC + 1);
  if (keep) copy_uncached(Cw.data(), DH * DV, C);
  std::copy(n0 + bh * DH, n0 + (bh + 1) * DH, n);
  m[0] = m0[bh];
  for (int64_t c = 0; c < NC; ++c) {
    const int64_t t0 = c * L, Lc = std::min(L, S - t0);
    const T *Q = q.at(b, h, t0), *K = k.at(b, h, t0), *V = v.at(b, h, t0);
    const T *ig = ig_all + bh * S + t0, *fg = fg_all + bh * S + t0;
    T* mt = mt_all + bh * S + t0;
    T* qn = qn_all + bh * S + t0;
    T* H = hout.at(b, h, t0);
    T* Cc = Cw.data();
    const T* nc = n + c * DH;
    const T m_in = m[c];
    // the decayed scores: kept per chunk for the backward, else one buffer per (batch, head)
    T* Sm = Ss + (keep ? bh * NC + c : bh) * L * L;
    if (c + 1 < NC) {
      const int64_t t1 = t0 + L, L1 = std::min(L, S - t1);
      prefetch_rows(q.at(b, h, t1), q.ss, L1, DH);
      prefetch_rows(k.at(b, h, t1), k.ss, L1, DH);
      prefetch_rows(v.at(b, h, t1), v.ss, L1, DV);
      prefetch_rows<T, true>(hout.at(b, h, t1), hout.ss, L1, DV);
    }
    chunk_gates(fg, ig, Lc, L, lf.data(), bc.data(), dec.data(), logd.data());
    tril_abt<T>(Lc, DH, alpha, Q, q.ss, K, k.ss, Sm, L);
    // H = Q C_in here; each row is scaled by its inter-chunk weight, then H += S V
    mm<T>(false, false, Lc, DV, DH, T(1), Q, q.ss, Cc, DV, T(0), H, hout.ss);
    for (int64_t t = 0; t < Lc; ++t) {
      const T* ld = logd.data() + t * L;
      T* s = Sm + t * L;
      const T ls = bc[t] + m_in;
      const T mx = std::max(row_max(ld, t + 1), ls);
      const int64_t span = causal_span(t, Lc);
      T sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < span; ++j) {
        const T e = std::exp(j <= t ? ld[j] - mx : T(0));
        s[j] = j <= t ? s[j] * e : T(0);
        sum += s[j];
      }
      std::fill(s + span, s + Lc, T(0));
      const T sw = std::exp(ls - mx);
      mt[t] = mx;
      qn[t] = sum + sw * dot_partial_sums(Q + t * q.ss, nc, DH);
      T* ht = H + t * hout.ss;
      scale(sw, ht, DV, ht);
    }
    tril_mm<T>(false, Lc, DV, T(1), Sm, L, V, v.ss, T(1), H, hout.ss);
    for (int64_t t = 0; t < Lc; ++t) {
      const T den = std::max(std::abs(qn[t]), std::exp(-mt[t])) + eps;
      T* ht = H + t * hout.ss;
#pragma omp simd
      for (int64_t e = 0; e < DV; ++e) ht[e] /= den;
    }
    // the state after the chunk, stabilised by m_new
    const T* log_in = logd.data() + (Lc - 1) * L;
    const T g = bc[Lc - 1], a = row_max(log_in, Lc);
    const T m_new = std::max(g + m_in, a), ws = std::exp(g + m_in - m_new);
    T* nn = n + (c + 1) * DH;
    scale(ws, nc, DH, nn);
#pragma omp simd
    for (int64_t j = 0; j < Lc; ++j) w[j] = std::exp(log_in[j] - m_new) * alpha;
    for (int64_t j = 0; j < Lc; ++j) {
      const T* kj = K + j * k.ss;
      T* kw = Kw.data() + j * DH;
#pragma omp simd
      for (int64_t d = 0; d < DH; ++d) { kw[d] = w[j] * kj[d]; nn[d] += kw[d]; }
    }
    mm<T>(true, false, DH, DV, Lc, T(1), Kw.data(), DH, V, v.ss, ws, Cc, DV);
    if (keep) copy_uncached(Cc, DH * DV, C + (c + 1) * DH * DV);
    m[c + 1] = m_new;
  }
  if (!keep) copy_uncached(Cw.data(), DH * DV, C);
  store_fence();
}

std::vector<at::Tensor> forward(at::Tensor q, at::Tensor k, at::Tensor v, at::Tensor i,
                                at::Tensor f, at::Tensor C0, at::Tensor n0, at::Tensor m0,
                                int64_t chunk, double eps, bool keep) {
  const int64_t B = q.size(0), NH = q.size(1), S = q.size(2), DH = q.size(3), DV = v.size(3);
  const int64_t L = std::min(chunk, S), NC = (S + L - 1) / L;
  auto opts = q.options();
  auto hbuf = at::empty({B, S, NH, DV}, opts);
  auto hout = hbuf.transpose(1, 2);
  auto Cs = at::empty({B, NH, keep ? NC + 1 : 1, DH, DV}, opts);
  auto ns = at::empty({B, NH, NC + 1, DH}, opts);
  auto ms = at::empty({B, NH, NC + 1}, opts);
  auto mt = at::empty({B, NH, S}, opts), qn = at::empty({B, NH, S}, opts);
  auto Ss = at::empty({B, NH, keep ? NC : 1, L, L}, opts);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "mlstm_forward", [&] {
    auto sq = seq<scalar_t>(q), sk = seq<scalar_t>(k), sv = seq<scalar_t>(v);
    auto sh = seq<scalar_t>(hout);
    const scalar_t *ip = i.data_ptr<scalar_t>(), *fp = f.data_ptr<scalar_t>();
    const scalar_t *c0 = C0.data_ptr<scalar_t>(), *nz = n0.data_ptr<scalar_t>();
    const scalar_t* mz = m0.data_ptr<scalar_t>();
    scalar_t *cs = Cs.data_ptr<scalar_t>(), *nsp = ns.data_ptr<scalar_t>();
    scalar_t *msp = ms.data_ptr<scalar_t>(), *mtp = mt.data_ptr<scalar_t>();
    scalar_t *qnp = qn.data_ptr<scalar_t>(), *ssp = Ss.data_ptr<scalar_t>();
    at::parallel_for(0, B * NH, 1, [&](int64_t begin, int64_t end) {
      SerialBlas serial;
      for (int64_t bh = begin; bh < end; ++bh)
        forward_bh<scalar_t>(bh / NH, bh % NH, NH, S, L, DH, DV, (scalar_t)eps, sq, sk, sv, ip,
                             fp, c0, nz, mz, sh, cs, nsp, msp, mtp, qnp, ssp, keep);
    });
  });
  return {hout, Cs, ns, ms, mt, qn, Ss};
}

template <typename T>
BX_CLONES static void backward_bh(int64_t b, int64_t h, int64_t NH, int64_t S, int64_t L,
                                  int64_t DH, int64_t DV, T eps, Seq<T> q, Seq<T> k, Seq<T> v,
                                  const T* ig_all, const T* fg_all, const T* Cs, const T* ns,
                                  const T* ms, const T* mt_all, const T* qn_all, const T* Ss,
                                  Seq<T> dhs, const T* dCe, const T* dne,
                                  const T* dme, Seq<T> dq, Seq<T> dk, Seq<T> dv, T* di_all,
                                  T* df_all, T* dC0, T* dn0, T* dm0) {
  const int64_t bh = b * NH + h, NC = (S + L - 1) / L;
  const T alpha = T(1) / std::sqrt(T(DH));
  std::vector<T> logd(L * L), E(L * L), dS(L * L), dnum(L * DV), X(L * DV),
      G(L * DH), Kw(L * DH), lf(L), bc(L), dec(L), w(L), sw(L), db(L), dlin(L),
      dens(L), dQb(L * DH), dKb(L * DH), dVb(L * DV);
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
    const T* dH = dhs.at(b, h, t0);
    // dQ, dK and dV are built in buffers that stay in cache, then copied out
    T *dQ = dQb.data(), *dK = dKb.data(), *dV = dVb.data();
    T *di = di_all + bh * S + t0, *df = df_all + bh * S + t0;
    const T* Cc = Call + c * DH * DV;
    const T* nc = nall + c * DH;
    const T m_in = mall[c];
    const T* Sm = Ss + (bh * NC + c) * L * L;  // the forward's decayed scores
    if (c > 0) {  // the previous chunk, next in this backward walk
      const int64_t t1 = t0 - L;
      prefetch_rows(q.at(b, h, t1), q.ss, L, DH);
      prefetch_rows(k.at(b, h, t1), k.ss, L, DH);
      prefetch_rows(v.at(b, h, t1), v.ss, L, DV);
      prefetch_rows(dhs.at(b, h, t1), dhs.ss, L, DV);
    }
    chunk_gates(fg, ig, Lc, L, lf.data(), bc.data(), dec.data(), logd.data());
    std::fill(db.begin(), db.begin() + Lc, T(0));
    T dmin = 0;

    // state update: C_out = ws C_in + sum_j w_j k_j v_j^T, m_out = max(g + m_in, max_j log_in)
    const T* log_in = logd.data() + (Lc - 1) * L;
    const T g = bc[Lc - 1], a = row_max(log_in, Lc);
    const T m_new = std::max(g + m_in, a), ws = std::exp(g + m_in - m_new);
    const T* dCp = dC.data();
    T* dCnp = dCn.data();
    // dC . C_out and dn . n_out come from C_out = ws C_in + sum_j w_j k_j v_j^T (likewise n_out):
    // ws (dC . C_in + dn . n_in) + sum_j w_j k_j . (dC v_j + dn), so C_out is not read back
    T dot_in = 0;
#pragma omp simd reduction(+ : dot_in)
    for (int64_t x = 0; x < DH * DV; ++x) {
      dot_in += dCp[x] * Cc[x];
      dCnp[x] = ws * dCp[x];
    }
    dot_in += dot_partial_sums(dn.data(), nc, DH);
    mm<T>(false, true, Lc, DH, DV, T(1), V, v.ss, dCp, DV, T(0), G.data(), DH);
#pragma omp simd
    for (int64_t j = 0; j < Lc; ++j) w[j] = std::exp(log_in[j] - m_new) * alpha;
    T dot_kv = 0;
    for (int64_t j = 0; j < Lc; ++j) {
      const T* kj = K + j * k.ss;
      const T* gj = G.data() + j * DH;
      const T* dnp = dn.data();
      T* kw = Kw.data() + j * DH;
      T* dkj = dK + j * DH;
      const T wj = w[j];
      T s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t d = 0; d < DH; ++d) {
        const T gd = gj[d] + dnp[d];
        s += kj[d] * gd;
        dkj[d] = wj * gd;
        kw[d] = wj * kj[d];
      }
      dlin[j] = wj * s;
      dot_kv += wj * s;
    }
    T dgm = 0, da = 0;
    route_max2(g + m_in, a, dm - (ws * dot_in + dot_kv), dgm, da);
    if (da != T(0)) route_amax(log_in, Lc, a, da, dlin.data());
    const T dg = dgm + ws * dot_in;
    dmin += dg;
    db[Lc - 1] += dg;
    mm<T>(false, false, Lc, DV, DH, T(1), Kw.data(), DH, dCp, DV, T(0), dV, DV);
    for (int64_t j = 0; j < Lc; ++j) {
      db[Lc - 1] += dlin[j];
      db[j] -= dlin[j];
      di[j] += dlin[j];
    }
    scale(ws, dn.data(), DH, dnn.data());

    // outputs: h = num / den, den = max(|qn|, exp(-mt)) + eps; at fixed mt, then mt's own
    // gradient, which is eps * d(den) because num, qn and exp(-mt) all scale with exp(-mt)
    for (int64_t t = 0; t < Lc; ++t) {
      const T* ld = logd.data() + t * L;
      T* e = E.data() + t * L;
      const T mtt = mt[t];
      const int64_t span = causal_span(t, Lc);
#pragma omp simd
      for (int64_t j = 0; j < span; ++j) e[j] = std::exp(j <= t ? ld[j] - mtt : T(0));
      sw[t] = std::exp(bc[t] + m_in - mtt);
      const T den = std::max(std::abs(qn[t]), std::exp(-mtt)) + eps;
      const T* dht = dH + t * dhs.ss;
      T* dnt = dnum.data() + t * DV;
#pragma omp simd
      for (int64_t x = 0; x < DV; ++x) dnt[x] = dht[x] / den;
      dens[t] = den;
    }
    tril_abt<T>(Lc, DV, T(1), dnum.data(), DV, V, v.ss, dS.data(), L);
    // dQ = Y = dnum C_in^T here: it gives both the inter-chunk weight's gradient,
    // dnum_t . (Q C_in)_t = Q_t . Y_t, and that part of dQ, sw_t Y_t, without recomputing Q C_in
    mm<T>(false, true, Lc, DH, DV, T(1), dnum.data(), DV, Cc, DV, T(0), dQ, DH);
    for (int64_t t = 0; t < Lc; ++t) {
      const T* ld = logd.data() + t * L;
      const T* s = Sm + t * L;
      const T* e = E.data() + t * L;
      T* ds = dS.data() + t * L;
      const T* qt = Q + t * q.ss;
      T* dQt = dQ + t * DH;
      // dh_t . h_t = dnum_t . num_t = sw_t Q_t . Y_t + S_t . (dnum V^T)_t, so h is not read back
      const T qy = dot_partial_sums(qt, dQt, DH);
      const T dden = -(sw[t] * qy + dot_partial_sums(s, ds, t + 1)) / dens[t];
      const T em = std::exp(-mt[t]), aq = std::abs(qn[t]);
      const T sgn = qn[t] > 0 ? T(1) : (qn[t] < 0 ? T(-1) : T(0));
      const T dqt = aq > em ? dden * sgn : (aq == em ? dden * sgn / 2 : T(0));
      const T dsw = qy + dqt * dot_partial_sums(qt, nc, DH);
      T dls = dsw * sw[t];
#pragma omp simd
      for (int64_t j = 0; j <= t; ++j) {
        const T dsj = ds[j] + dqt;
        dlin[j] = dsj * s[j];
        ds[j] = dsj * e[j];
      }
      std::fill(ds + t + 1, ds + Lc, T(0));
      const T ls = bc[t] + m_in, mx = row_max(ld, t + 1);
      T dmx = 0;
      route_max2(mx, ls, eps * dden, dmx, dls);
      if (dmx != T(0)) route_amax(ld, t + 1, mx, dmx, dlin.data());
      T rowsum = 0;
      const T* dl = dlin.data();
      T* dbp = db.data();
#pragma omp simd reduction(+ : rowsum)
      for (int64_t j = 0; j <= t; ++j) {
        di[j] += dl[j];
        rowsum += dl[j];
        dbp[j] -= dl[j];
      }
      db[t] += rowsum + dls;
      dmin += dls;
      scale(sw[t], dnum.data() + t * DV, DV, X.data() + t * DV);
      const T swt = sw[t], sq = swt * dqt;
      T* dnp = dnn.data();
#pragma omp simd
      for (int64_t d = 0; d < DH; ++d) {
        dnp[d] += sq * qt[d];
        dQt[d] = swt * dQt[d] + sq * nc[d];
      }
    }
    tril_mm<T>(false, Lc, DH, alpha, dS.data(), L, K, k.ss, T(1), dQ, DH);
    tril_mm<T>(true, Lc, DH, alpha, dS.data(), L, Q, q.ss, T(1), dK, DH);
    mm<T>(true, false, DH, DV, Lc, T(1), Q, q.ss, X.data(), DV, T(1), dCn.data(), DV);
    tril_mm<T>(true, Lc, DV, T(1), Sm, L, dnum.data(), DV, T(1), dV, DV);
    for (int64_t t = 0; t < Lc; ++t) {
      copy_uncached(dQ + t * DH, DH, dq.at(b, h, t0 + t));
      copy_uncached(dK + t * DH, DH, dk.at(b, h, t0 + t));
      copy_uncached(dV + t * DV, DV, dv.at(b, h, t0 + t));
    }
    // b = cumsum(lf), lf = logsigmoid(f)
    T acc = 0;
    for (int64_t t = Lc - 1; t >= 0; --t) {
      acc += db[t];
      df[t] = acc * sigmoid_neg(fg[t]);
    }
    dC.swap(dCn);
    dn.swap(dnn);
    dm = dmin;
  }
  std::copy(dC.begin(), dC.end(), dC0 + bh * DH * DV);
  std::copy(dn.begin(), dn.end(), dn0 + bh * DH);
  dm0[bh] = dm;
  store_fence();
}

std::vector<at::Tensor> backward(at::Tensor q, at::Tensor k, at::Tensor v, at::Tensor i,
                                 at::Tensor f, at::Tensor Cs, at::Tensor ns, at::Tensor ms,
                                 at::Tensor mt, at::Tensor qn, at::Tensor Ss,
                                 at::Tensor dh, at::Tensor dC, at::Tensor dn, at::Tensor dm,
                                 int64_t chunk, double eps) {
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
    auto sdh = seq<scalar_t>(dh);
    auto sdq = seq<scalar_t>(dq), sdk = seq<scalar_t>(dk), sdv = seq<scalar_t>(dv);
    const scalar_t *ip = i.data_ptr<scalar_t>(), *fp = f.data_ptr<scalar_t>();
    const scalar_t *cs = Cs.data_ptr<scalar_t>(), *nsp = ns.data_ptr<scalar_t>();
    const scalar_t *msp = ms.data_ptr<scalar_t>(), *mtp = mt.data_ptr<scalar_t>();
    const scalar_t *qnp = qn.data_ptr<scalar_t>(), *ssp = Ss.data_ptr<scalar_t>();
    const scalar_t *dCe = dC.data_ptr<scalar_t>(), *dne = dn.data_ptr<scalar_t>();
    const scalar_t* dme = dm.data_ptr<scalar_t>();
    scalar_t *dip = di.data_ptr<scalar_t>(), *dfp = df.data_ptr<scalar_t>();
    scalar_t *dc0 = dC0.data_ptr<scalar_t>(), *dnz = dn0.data_ptr<scalar_t>();
    scalar_t* dmz = dm0.data_ptr<scalar_t>();
    at::parallel_for(0, B * NH, 1, [&](int64_t begin, int64_t end) {
      SerialBlas serial;
      for (int64_t bh = begin; bh < end; ++bh)
        backward_bh<scalar_t>(bh / NH, bh % NH, NH, S, L, DH, DV, (scalar_t)eps, sq, sk, sv, ip,
                              fp, cs, nsp, msp, mtp, qnp, ssp, sdh, dCe, dne, dme, sdq, sdk, sdv,
                              dip, dfp, dc0, dnz, dmz);
    });
  });
  return {dq, dk, dv, di, df, dC0, dn0, dm0};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", torch::wrap_pybind_function(forward), "forward");
  m.def("backward", torch::wrap_pybind_function(backward), "backward");
}
