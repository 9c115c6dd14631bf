"""Keep freed memory in the process: large CPU tensors then reuse pages instead of faulting new ones.

glibc's malloc hands blocks of more than 32 MiB (less before its threshold adapts) to fresh
`mmap`s and returns them on free, so every training step touches its activations' memory anew:
the kernel zeroes each 4 KiB page on first touch, which on long sequences costs about a quarter of
a CPU training step (docs/performance.md). `retain_freed_memory()` tells malloc to serve every
size from its heap and never shrink it, so the process keeps its high-water mark of memory and
steps run on warm pages. Training (`Trainer.train`), the CLI and the benchmarks call it; set
BIOXLSTM_MALLOC=system to leave malloc as it is. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from functools import cache

# mallopt parameters from glibc's malloc.h
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


@cache
def retain_freed_memory() -> bool:
    """Make glibc malloc keep freed memory for reuse; True if it now does (once per process)."""
    if os.environ.get("BIOXLSTM_MALLOC", "").lower() == "system" or not sys.platform.startswith(
            "linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # -1: never trim (mallopt(3))
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, -1))
