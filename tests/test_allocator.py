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

# the heap grows now and then until freed blocks coalesce into gaps a block fits in; how often
# depends on the small allocations in between, so count the fresh blocks over many rounds
for _ in range(3):
    faults()
print(sum(faults() for _ in range(10)))
"""


BLOCK = 16_384  # page faults of one fresh 64 MiB block


def run(env_value: str | None) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "BIOXLSTM_MALLOC"}
    if env_value is not None:
        env["BIOXLSTM_MALLOC"] = env_value
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_large_blocks_reuse_pages_and_opt_out_restores_default():
    enabled, faults = run(None)
    assert enabled == "True"
    assert faults < 3 * BLOCK  # at most two of ten blocks in fresh pages
    disabled, default_faults = run("system")
    assert disabled == "False"
    assert default_faults > 9 * BLOCK  # glibc's default: a fresh mmap for every block
