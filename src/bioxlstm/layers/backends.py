"""Registry of mLSTM sequence kernels: the reference torch forms, plus accelerated ones if importable.

A kernel takes (q, k, v, i, f, state, chunk_size) and returns (h, end_state). The reference forms
are always present; optional backends register themselves here and are tested against them.
"chunkwise" runs the fused CPU kernel of `mlstm_cpu` when it supports the inputs (CPU tensors,
float32/64, extension built), mlstm_kernels' Triton kernel on CUDA where that package is installed
(`mlstm_triton`), and the PyTorch form otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from bioxlstm.layers.mlstm import MLSTMState, mlstm_chunkwise, mlstm_parallel, mlstm_recurrent
from bioxlstm.layers.mlstm_cpu import fused_supported, mlstm_chunkwise_fused
from bioxlstm.layers.mlstm_triton import triton_kernel, triton_supported

MLSTMKernel = Callable[..., tuple[Tensor, MLSTMState]]


def _chunkwise(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, state: MLSTMState | None,
               chunk_size: int) -> tuple[Tensor, MLSTMState]:
    """The chunkwise form: a fused CPU or Triton kernel where one applies, else the PyTorch one."""
    if chunk_size >= 1 and fused_supported(q, k, v, state):
        return mlstm_chunkwise_fused(q, k, v, i, f, state, chunk_size=chunk_size)
    if chunk_size >= 1 and triton_supported(q):
        return triton_kernel()(q, k, v, i, f, state, chunk_size)
    return mlstm_chunkwise(q, k, v, i, f, state, return_state=True, chunk_size=chunk_size)


_KERNELS: dict[str, MLSTMKernel] = {
    "chunkwise": _chunkwise,
    "parallel": lambda q, k, v, i, f, state, chunk_size: mlstm_parallel(
        q, k, v, i, f, state, return_state=True),
    "recurrent": lambda q, k, v, i, f, state, chunk_size: mlstm_recurrent(
        q, k, v, i, f, state, return_state=True),
}


def register_mlstm_kernel(name: str, kernel: MLSTMKernel) -> None:
    """Make an mLSTM kernel selectable by name (used by optional accelerated backends)."""
    _KERNELS[name] = kernel


def mlstm_kernel(name: str) -> MLSTMKernel:
    """The registered kernel called `name`."""
    if name not in _KERNELS:
        raise ValueError(f"unknown mLSTM kernel {name!r}; available: {sorted(_KERNELS)}")
    return _KERNELS[name]


def available_mlstm_kernels() -> list[str]:
    return sorted(_KERNELS)
