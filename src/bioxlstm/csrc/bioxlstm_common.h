// What every bioxlstm CPU kernel shares: the vectorised-maths prelude, the clone and inline
// macros, explicit vector types and the small math helpers. Each kernel includes it after
// <torch/extension.h>; layers/cpu_build.py builds them all with the same flags.
#pragma once

// On x86-64 Linux with GCC, declare glibc's libmvec SIMD versions of exp, log1p, tanh and erf, so
// `#pragma omp simd` loops calling them vectorise; without libmvec (BX_NO_LIBMVEC, the fallback
// build) the same loops call the scalar functions.
#include <cmath>  // defines __GLIBC__ for the test below
#if defined(__x86_64__) && defined(__GLIBC__) && defined(__GNUC__) && !defined(__clang__)
#if __GLIBC_PREREQ(2, 35) && !defined(BX_NO_LIBMVEC)
extern "C" {
#pragma omp declare simd notinbranch
float expf(float) noexcept;
#pragma omp declare simd notinbranch
double exp(double) noexcept;
#pragma omp declare simd notinbranch
float log1pf(float) noexcept;
#pragma omp declare simd notinbranch
double log1p(double) noexcept;
#pragma omp declare simd notinbranch
float tanhf(float) noexcept;
#pragma omp declare simd notinbranch
double tanh(double) noexcept;
#pragma omp declare simd notinbranch
float erff(float) noexcept;
#pragma omp declare simd notinbranch
double erf(double) noexcept;
}
#endif
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>

// BX_CLONES builds a function for AVX2/FMA and for the baseline, and the loader picks the one
// this CPU runs (nothing to pick in the AVX-512 build, which targets x86-64-v4 throughout).
// BX_CLONES_V4 adds an AVX-512 clone, for kernels that have no AVX-512 build of their own.
#if defined(__x86_64__) && defined(__GLIBC__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__AVX512F__)
#define BX_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define BX_CLONES
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#define BX_CLONES_V4 __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define BX_CLONES_V4
#endif

// The width of explicit vectors: 32 bytes, or 64 in the AVX-512 build (-DBX_VEC_BYTES=64).
#ifndef BX_VEC_BYTES
#define BX_VEC_BYTES 32
#endif
#define BX_INLINE inline __attribute__((always_inline))

// The helpers below are `static`, as each kernel's own are: GCC allocates registers in the hot
// loops differently around non-static ones (seen in the disassembly when these moved here).

// Vec<T>: BX_VEC_BYTES of T in one register, kLanes<T> of them; vload and vstore move one
// between memory of any alignment and a register.
template <typename T> struct VecOf {
  typedef T type __attribute__((vector_size(BX_VEC_BYTES)));
};
template <typename T> using Vec = typename VecOf<T>::type;
template <typename T> constexpr int64_t kLanes = BX_VEC_BYTES / sizeof(T);
template <typename T> static BX_INLINE Vec<T> vload(const T* p) {
  Vec<T> r;
  std::memcpy(&r, p, sizeof r);
  return r;
}
template <typename T> static BX_INLINE void vstore(T* p, Vec<T> x) { std::memcpy(p, &x, sizeof x); }

// 1 / (1 + e^-x): where x is never far below -88 (float), or where an inf in between is harmless
template <typename T> static BX_INLINE T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }
// The same from e^-|x|, which never overflows
template <typename T> static BX_INLINE T sigmoid_stable(T x) {
  const T e = std::exp(-std::abs(x));
  return x >= 0 ? T(1) / (T(1) + e) : e / (T(1) + e);
}
template <typename T> static BX_INLINE T log_sigmoid(T x) {
  return std::min(x, T(0)) - std::log1p(std::exp(-std::abs(x)));
}
template <typename T> static BX_INLINE T silu(T x) { return x / (T(1) + std::exp(-x)); }
// The standard normal CDF, and the exact (erf) GELU as F.gelu computes it
template <typename T> static BX_INLINE T phi(T x) {
  return T(0.5) * (T(1) + std::erf(x * T(M_SQRT1_2)));
}
template <typename T> static BX_INLINE T gelu(T x) {
  return T(0.5) * x * (T(1) + std::erf(x * T(M_SQRT1_2)));
}

// x . y over n entries, summed as `omp simd reduction` vectorises it
template <typename T> static BX_INLINE T dot(const T* x, const T* y, int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += x[i] * y[i];
  return s;
}

// x . y over n entries in kPartialSums interleaved partial sums, an order fixed in the source: GCC
// vectorises this where it left the `omp simd reduction` form scalar inside some row loops
constexpr int64_t kPartialSums = 16;
template <typename T> static BX_INLINE T dot_partial_sums(const T* x, const T* y, int64_t n) {
  T acc[kPartialSums] = {};
  int64_t j = 0;
  for (; j + kPartialSums <= n; j += kPartialSums)
    for (int64_t l = 0; l < kPartialSums; ++l) acc[l] += x[j + l] * y[j + l];
  T s = 0;
  for (; j < n; ++j) s += x[j] * y[j];
  for (int64_t l = 0; l < kPartialSums; ++l) s += acc[l];
  return s;
}
