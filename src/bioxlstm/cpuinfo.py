"""What the CPU is: its vendor and instruction-set flags, from /proc/cpuinfo (empty elsewhere).

Kernel builds (`layers/cpu_build`) and the choice of dense-product library (`layers/dense`) depend
on them; benchmarks record them.
"""

from __future__ import annotations

import re
from functools import cache


@cache
def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def _field(name: str) -> str:
    match = re.search(rf"^{name}\s*:\s*(.*)$", _cpuinfo(), re.MULTILINE)
    return match.group(1).strip() if match else ""


def cpu_model() -> str:
    """The CPU's marketing name ("model name"), or "" where it cannot be read."""
    return _field("model name")


def cpu_vendor() -> str:
    """The vendor string ("GenuineIntel", "AuthenticAMD"), or "" where it cannot be read."""
    return _field("vendor_id")


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux names them ("avx2", "avx512f", "amx_bf16", ...)."""
    return frozenset(_field("flags").split())
