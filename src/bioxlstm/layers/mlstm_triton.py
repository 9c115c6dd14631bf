"""Optional GPU backend: the mLSTM cell on the Triton kernels of NX-AI's `mlstm_kernels` package.

`mlstm_kernels` (extra `[gpu]`, NXAI Community License) is never required. Its kernels keep the
state unscaled (C = sum k v^T) where bioxlstm scales keys by 1/sqrt(DH), so C and n are converted
on the way in and out; they take whole chunks only, so a tail shorter than the kernel's chunk runs
through the reference chunkwise form from the carried state. Outputs, end state and gradients
therefore follow bioxlstm.layers.mlstm exactly, which tests/test_mlstm_triton.py checks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache

import torch
from torch import Tensor

from bioxlstm.layers.cpu_build import extensions_disabled
from bioxlstm.layers.mlstm import EPS, MLSTMState, mlstm_chunkwise, zero_state

TRITON_KERNEL = "chunkwise--triton_xl_chunk"
KERNEL_CHUNK = 64  # the Triton kernel's own chunk; sequences run through it in multiples of this

MLSTMKernel = Callable[..., tuple[Tensor, MLSTMState]]


@cache
def package_kernel(name: str) -> Callable | None:
    """The `mlstm_kernels` sequence kernel called `name`, or None where it cannot be imported."""
    try:
        from mlstm_kernels.torch import get_mlstm_kernel

        return get_mlstm_kernel(name)
    except (ImportError, ValueError):
        return None


def triton_available() -> bool:
    """True where CUDA is present and mlstm_kernels' Triton kernel imports (and
    BIOXLSTM_NO_EXTENSIONS=1 is not set)."""
    return (not extensions_disabled() and torch.cuda.is_available()
            and package_kernel(TRITON_KERNEL) is not None)


class _Triton:
    """mlstm_kernels' Triton kernels as the backend of a fast path."""

    def available(self) -> bool:
        """Whether CUDA is present and the Triton kernel imports (see triton_available)."""
        return triton_available()

    def unavailable_reason(self) -> str:
        """What it needs."""
        return "needs CUDA and mlstm_kernels' Triton kernels"


TRITON = _Triton()


def mlstm_chunkwise_triton_supported(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor,
                                     state: MLSTMState | None, chunk_size: int) -> bool:
    """Whether the Triton kernel takes these inputs: CUDA tensors of a half or single dtype, and a
    chunk size of at least 1 (for the tail it leaves to the chunkwise form)."""
    return chunk_size >= 1 and q.is_cuda and q.dtype in (torch.float32, torch.bfloat16,
                                                         torch.float16)


@cache
def triton_kernel() -> MLSTMKernel:
    """The Triton kernel behind bioxlstm's kernel signature (call only where triton_available)."""
    return adapt(package_kernel(TRITON_KERNEL))


def mlstm_chunkwise_triton(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor,
                           state: MLSTMState | None, chunk_size: int) -> tuple[Tensor, MLSTMState]:
    """The chunkwise cell on the Triton kernel (where triton_available); `backends` registers it."""
    return triton_kernel()(q, k, v, i, f, state, chunk_size)


def adapt(kernel: Callable, kernel_chunk: int = KERNEL_CHUNK) -> MLSTMKernel:
    """A bioxlstm kernel (q, k, v, i, f, state, chunk_size) -> (h, end state) around an
    mlstm_kernels chunkwise kernel."""

    def run(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, state: MLSTMState | None,
            chunk_size: int) -> tuple[Tensor, MLSTMState]:
        C0, n0, m0 = zero_state(q, v) if state is None else state
        S = q.shape[2]
        full = S - S % kernel_chunk
        if full == 0:
            return mlstm_chunkwise(q, k, v, i, f, (C0, n0, m0), return_state=True,
                                   chunk_size=chunk_size)
        scale = math.sqrt(q.shape[-1])
        h, (C, n, m) = kernel(
            q[:, :, :full], k[:, :, :full], v[:, :, :full], i[:, :, :full], f[:, :, :full],
            c_initial=C0 * scale, n_initial=n0 * scale, m_initial=m0.unsqueeze(-1),
            return_last_states=True, eps=EPS, chunk_size=kernel_chunk)
        end = (C / scale, n / scale, m.squeeze(-1))
        if full == S:
            return h, end
        tail, end = mlstm_chunkwise(q[:, :, full:], k[:, :, full:], v[:, :, full:],
                                    i[:, :, full:], f[:, :, full:], end, return_state=True,
                                    chunk_size=chunk_size)
        return torch.cat([h, tail.to(h.dtype)], dim=2), end

    return run
