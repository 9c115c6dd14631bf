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

def faults():  # page faults of allocating, filling and freeing a 64 MiB block
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(64 * 2**20 // 4).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

# the first blocks grow the heap until freed ones coalesce into a gap the block fits in
warm = next((n for n in range(20) if faults() < 1000), 20)
print(warm, sum(faults() for _ in range(5)))
"""


def run(env_value: str | None) -> tuple[str, int, int]:
    env = {k: v for k, v in os.environ.items() if k != "BIOXLSTM_MALLOC"}
    if env_value is not None:
        env["BIOXLSTM_MALLOC"] = env_value
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    return out[0], int(out[1]), int(out[2])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_large_blocks_reuse_pages_and_opt_out_restores_default():
    enabled, warm, faults = run(None)
    assert enabled == "True"
    assert warm < 20 and faults < 1000  # 64 MiB of fresh pages is 16,384 faults
    disabled, warm, default_faults = run("system")
    assert disabled == "False"
    assert warm == 20 and default_faults > 5 * 16_000  # glibc's default: a fresh mmap per block
