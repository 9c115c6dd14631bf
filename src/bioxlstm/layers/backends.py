"""Registry of mLSTM sequence kernels: each form's PyTorch reference and its accelerated kernels.

A kernel takes (q, k, v, i, f, state, chunk_size) and returns (h, end_state). Every form
("chunkwise", "parallel", "recurrent") is a `FastPath` whose reference is the PyTorch form of
`mlstm`; accelerated kernels register on a form with `register_mlstm_kernel` and are tried in
the order registered. The chunkwise form has two: the fused CPU kernel of `mlstm_cpu` ("fused":
CPU tensors, float32/64, extension built) and mlstm_kernels' Triton kernel on CUDA where that
package is installed ("triton", `mlstm_triton`).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from bioxlstm.layers.cpu_kernels import MLSTM_CELL
from bioxlstm.layers.fast_paths import Backend, FastPath
from bioxlstm.layers.mlstm import MLSTMState, mlstm_chunkwise, mlstm_parallel, mlstm_recurrent
from bioxlstm.layers.mlstm_cpu import mlstm_chunkwise_fused, mlstm_chunkwise_supported
from bioxlstm.layers.mlstm_triton import (
    TRITON,
    mlstm_chunkwise_triton,
    mlstm_chunkwise_triton_supported,
)

MLSTMKernel = Callable[..., tuple[Tensor, MLSTMState]]


def mlstm_chunkwise_reference(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor,
                              state: MLSTMState | None, chunk_size: int) -> tuple[Tensor, MLSTMState]:
    """The chunkwise form in PyTorch operators (`mlstm.mlstm_chunkwise`)."""
    return mlstm_chunkwise(q, k, v, i, f, state, return_state=True, chunk_size=chunk_size)


def _parallel(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, state: MLSTMState | None,
              chunk_size: int) -> tuple[Tensor, MLSTMState]:
    return mlstm_parallel(q, k, v, i, f, state, return_state=True)


def _recurrent(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, state: MLSTMState | None,
               chunk_size: int) -> tuple[Tensor, MLSTMState]:
    return mlstm_recurrent(q, k, v, i, f, state, return_state=True)


_FORMS: dict[str, FastPath] = {
    "chunkwise": FastPath("mLSTM chunkwise", mlstm_chunkwise_reference),
    "parallel": FastPath("mLSTM parallel", _parallel),
    "recurrent": FastPath("mLSTM recurrent", _recurrent),
}


def register_mlstm_kernel(form: str, name: str, kernel: MLSTMKernel,
                          supported: Callable[..., bool], backend: Backend) -> None:
    """Add an accelerated kernel to a form: it runs where `supported(q, ..., chunk_size)` and
    `backend.available()` hold, before the kernels registered after it and the reference."""
    mlstm_kernel(form).register(name, kernel, supported, backend)


def mlstm_kernel(form: str) -> FastPath:
    """The dispatcher of the form called `form`: call it with (q, k, v, i, f, state, chunk_size)."""
    if form not in _FORMS:
        raise ValueError(f"unknown mLSTM kernel {form!r}; available: {sorted(_FORMS)}")
    return _FORMS[form]


register_mlstm_kernel("chunkwise", "fused", mlstm_chunkwise_fused, mlstm_chunkwise_supported,
                      MLSTM_CELL)
register_mlstm_kernel("chunkwise", "triton", mlstm_chunkwise_triton,
                      mlstm_chunkwise_triton_supported, TRITON)
