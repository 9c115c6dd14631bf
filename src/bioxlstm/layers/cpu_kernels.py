"""Every optional CPU kernel in one list, to build them all ahead of first use.

Each kernel (`csrc/<source>.cpp`) compiles on its first use (25-60 s apiece) and is cached per
machine. Building them up front keeps that time out of a job's first steps, and out of a
benchmark's timed (and time-limited) worker processes: a worker killed mid-build would leave
torch's build lock behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bioxlstm.layers.cpu_build import CpuKernel

MLSTM_CELL = CpuKernel("mlstm_cell", "mLSTM cell")
MLSTM_INPUTS = CpuKernel("mlstm_inputs", "mLSTM input side", avx512=True)
MLSTM_OUTPUT_GATE = CpuKernel("mlstm_output_gate", "mLSTM output gate")
SLSTM_SCAN = CpuKernel("slstm_scan", "sLSTM scan", avx512=True)
SLSTM_INPUTS = CpuKernel("slstm_inputs", "sLSTM input side", avx512=True)
GELU_GATE = CpuKernel("gelu_gate", "GELU gate")
GENERATION_STEP = CpuKernel("generation_step", "generation step")

KERNELS: dict[str, CpuKernel] = {kernel.title: kernel for kernel in (
    MLSTM_CELL, MLSTM_INPUTS, MLSTM_OUTPUT_GATE, SLSTM_SCAN, SLSTM_INPUTS, GELU_GATE,
    GENERATION_STEP)}


def build_cpu_kernels(report: Callable[[str, bool, float], None] | None = None) -> dict[str, bool]:
    """Build (or load from the cache) every CPU kernel; which ones are available.

    `report(name, available, seconds)` is called after each, e.g. to print progress.
    """
    available = {}
    for name, kernel in KERNELS.items():
        start = time.perf_counter()
        available[name] = kernel.available()
        if report is not None:
            report(name, available[name], time.perf_counter() - start)
    return available
