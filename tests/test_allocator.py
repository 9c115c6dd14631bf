"""retain_freed_memory: on glibc, freed large blocks stay in the process and are reused."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

CHECK = """
import resource, torch
from bioxlstm.allocator import retain_freed_memory
print(retain_freed_memory())
for _ in range(3):  # 64 MiB blocks, each freed; the first ones grow the heap
    torch.ones(64 * 2**20 // 4).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    torch.ones(64 * 2**20 // 4).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def run(env_value: str | None) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "BIOXLSTM_MALLOC"}
    if env_value is not None:
        env["BIOXLSTM_MALLOC"] = env_value
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_second_large_block_reuses_pages_and_opt_out_restores_default():
    enabled, faults = run(None)
    assert enabled == "True"
    assert faults < 1000  # 64 MiB of fresh pages is 16,384 faults
    disabled, default_faults = run("system")
    assert disabled == "False"
    assert default_faults > 3 * 16_000  # glibc's default: a fresh mmap per large block
