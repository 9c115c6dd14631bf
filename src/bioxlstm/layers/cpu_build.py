"""Building the optional C++ CPU kernels: one loader with a vectorised-maths build and a fallback.

Kernel sources start with `SIMD_PRELUDE`. On x86-64 Linux with GCC it declares glibc's libmvec
SIMD versions of exp, log1p, tanh and erf (so `#pragma omp simd` loops calling them vectorise) and
defines `BX_CLONES`, which builds a function for AVX2/FMA and for the baseline and lets the loader
pick the one this CPU runs. Without libmvec the same loops build and call the scalar functions.
A kernel written with explicit vectors of `BX_VEC_BYTES` can ask for an AVX-512 build
(`avx512=True`): on a CPU with AVX-512 it is compiled for x86-64-v4 with 64-byte vectors first.
Every build uses -fopenmp: without it at::parallel_for runs on one thread.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from types import ModuleType

from bioxlstm.cpuinfo import cpu_flags

SIMD_PRELUDE = r"""
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
#if defined(__x86_64__) && defined(__GLIBC__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__AVX512F__)
#define BX_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define BX_CLONES
#endif
#ifndef BX_VEC_BYTES
#define BX_VEC_BYTES 32
#endif
#define BX_INLINE inline __attribute__((always_inline))
"""

_CFLAGS = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
_AVX512_FLAGS = ["-march=x86-64-v4", "-DBX_VEC_BYTES=64"]
X86_64_V4_AVX512 = frozenset({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"})


def extensions_disabled() -> bool:
    """Whether BIOXLSTM_NO_EXTENSIONS=1 switches every optional kernel off (PyTorch code runs)."""
    return os.environ.get("BIOXLSTM_NO_EXTENSIONS") == "1"


def avx512_build_possible() -> bool:
    """Whether this is x86-64 Linux on a CPU with every AVX-512 subset of x86-64-v4."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return False
    return X86_64_V4_AVX512 <= cpu_flags()


STALE_LOCK_S = 600.0  # a build takes at most a minute or two; a lock this old has no owner


def clear_stale_lock(module_name: str) -> bool:
    """Remove torch's build lock of `module_name` if it is older than STALE_LOCK_S; whether it did.

    A build interrupted midway (Ctrl-C, a killed job) leaves the lock file behind, and torch then
    waits on it forever in every later process, with no message.
    """
    from torch.utils import cpp_extension

    try:
        lock = os.path.join(cpp_extension._get_build_directory(module_name, verbose=False), "lock")
        if time.time() - os.path.getmtime(lock) < STALE_LOCK_S:
            return False
        os.remove(lock)
    except (AttributeError, OSError):  # no lock, or a torch without this helper: nothing to do
        return False
    print(f"bioxlstm: removed a stale build lock left by an interrupted build: {lock}",
          file=sys.stderr)
    return True


def build_extension(name: str, source: str, functions: list[str], what: str,
                    avx512: bool = False) -> ModuleType | None:
    """Compile `source` (which starts with SIMD_PRELUDE) as module `name`; None if impossible.

    Tries a build linked to libmvec where that exists, then one without it; with `avx512` and a
    CPU that has it, an x86-64-v4 build with 64-byte vectors before both. A failure, or
    BIOXLSTM_NO_EXTENSIONS=1, returns None and prints one line naming `what` falls back.
    """
    if extensions_disabled():
        return None
    from torch.utils.cpp_extension import load_inline

    builds = [(f"{name}_nomvec", _CFLAGS + ["-DBX_NO_LIBMVEC"], ["-fopenmp"])]
    if sys.platform == "linux" and platform.machine() == "x86_64":
        builds.insert(0, (name, _CFLAGS, ["-fopenmp", "-lmvec"]))
    if avx512 and avx512_build_possible():
        builds.insert(0, (f"{name}_avx512", _CFLAGS + _AVX512_FLAGS, ["-fopenmp", "-lmvec"]))
    err: Exception | None = None
    for module_name, cflags, ldflags in builds:
        clear_stale_lock(module_name)
        try:
            return load_inline(name=module_name, cpp_sources=[source], functions=functions,
                               extra_cflags=cflags, extra_ldflags=ldflags)
        except Exception as e:  # any build failure means: try the next build, then PyTorch code
            err = e
    print(f"bioxlstm: {what} unavailable, using PyTorch code ({err})"[:300], file=sys.stderr)
    return None
