"""Every optional CPU kernel in one list, to build them all ahead of first use.

Each kernel compiles on its first use (25-60 s apiece) and is cached per machine. Building them
up front keeps that time out of a job's first steps, and out of a benchmark's timed (and
time-limited) worker processes: a worker killed mid-build would leave torch's build lock behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import ModuleType

from bioxlstm.layers import (
    fused_step,
    gelu_gate_cpu,
    mlstm_cpu,
    mlstm_input_cpu,
    mlstm_output_cpu,
    slstm_cpu,
    slstm_input_cpu,
)

KERNELS: dict[str, Callable[[], ModuleType | None]] = {
    "mLSTM cell": mlstm_cpu.load,
    "mLSTM input side": mlstm_input_cpu.load,
    "mLSTM output gate": mlstm_output_cpu.load,
    "sLSTM scan": slstm_cpu.load,
    "sLSTM input side": slstm_input_cpu.load,
    "GELU gate": gelu_gate_cpu.load,
    "generation step": fused_step.load,
}


def build_cpu_kernels(report: Callable[[str, bool, float], None] | None = None) -> dict[str, bool]:
    """Build (or load from the cache) every CPU kernel; which ones are available.

    `report(name, available, seconds)` is called after each, e.g. to print progress.
    """
    available = {}
    for name, load in KERNELS.items():
        start = time.perf_counter()
        available[name] = load() is not None
        if report is not None:
            report(name, available[name], time.perf_counter() - start)
    return available
