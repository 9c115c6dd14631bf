"""Optional fused CPU kernel of the chunkwise mLSTM cell (csrc/mlstm_cell.cpp), forward and backward.

The cell (`mlstm_chunkwise_fused`) is `mlstm_chunkwise` in one pass: forward and backward each run
over (batch, head) in parallel and walk the chunks in order, so the chunk-layout copies, the decay
matrices and the elementwise temporaries of the PyTorch form never exist at full size; the matmuls
go to the BLAS that torch links, one thread per task, and skip the zero block of each causal score
matrix. The running state and each chunk's gradients are built in buffers that stay in cache and
copied out with stores that bypass it (each chunk's state only when a backward will read it). The
forward keeps each chunk's decayed scores (chunk-size floats per token and head) so the backward
need not recompute them. The backward is written by hand and differentiates the
stabilised arithmetic exactly, including the routing of the stabilisers' gradients through their
maxima, so it matches autograd through `mlstm_chunkwise`; it does not read h back (dh . h comes
from products it computes anyway).

The work around the cell has kernels of its own: `mlstm_inputs` (conv, q/k/v, gates) and
`mlstm_output_gate` (the output gate). `backends` registers this one as the chunkwise form's
"fused" implementation.

Built on first use by `cpu_build` (its exp loops vectorised where libmvec exists) and cached by
torch. The cell calls the MKL that torch's x86 wheels link; if the build or the load fails (e.g. a
torch without MKL), or BIOXLSTM_NO_EXTENSIONS=1 is set, the PyTorch form runs instead.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bioxlstm.layers.cpu_kernels import MLSTM_CELL
from bioxlstm.layers.fast_paths import cpu_floats
from bioxlstm.layers.mlstm import EPS, MLSTMState, check_inputs, zero_state


def _unit_last(x: Tensor) -> Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


class _FusedChunkwise(torch.autograd.Function):
    """The chunkwise cell and its exact gradient, both in the compiled kernel."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, C0: Tensor,
                n0: Tensor, m0: Tensor, chunk_size: int, eps: float, keep: bool):
        h, Cs, ns, ms, mt, qn, Ss = MLSTM_CELL.load().forward(q, k, v, i, f, C0, n0, m0,
                                                              chunk_size, eps, keep)
        ctx.save_for_backward(q, k, v, i, f, Cs, ns, ms, mt, qn, Ss)
        ctx.chunk_size, ctx.eps = chunk_size, eps
        return h, Cs[:, :, -1].clone(), ns[:, :, -1].clone(), ms[:, :, -1].clone()

    @staticmethod
    def backward(ctx, dh: Tensor, dC: Tensor, dn: Tensor, dm: Tensor):
        q, k, v, i, f, Cs, ns, ms, mt, qn, Ss = ctx.saved_tensors
        grads = MLSTM_CELL.load().backward(q, k, v, i, f, Cs, ns, ms, mt, qn, Ss, _unit_last(dh),
                                           dC.contiguous(), dn.contiguous(), dm.contiguous(),
                                           ctx.chunk_size, ctx.eps)
        return (*grads, None, None, None)


def mlstm_chunkwise_supported(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor,
                              state: MLSTMState | None, chunk_size: int) -> bool:
    """Whether `mlstm_chunkwise_fused` takes these inputs: a chunk size of at least 1, and q, k, v
    and the state non-empty CPU tensors of one dtype, float32 or float64 (i and f are converted)."""
    return (chunk_size >= 1 and q.dim() == 4 and q.numel() > 0 and v.numel() > 0
            and cpu_floats(q, k, v, *(state or ())))


def mlstm_chunkwise_fused(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    i: Tensor,
    f: Tensor,
    state: MLSTMState | None = None,
    chunk_size: int = 64,
    eps: float = EPS,
) -> tuple[Tensor, MLSTMState]:
    """`mlstm_chunkwise(..., return_state=True)` through the compiled kernel (see module doc).

    The output h has the memory layout (B, S, NH, DH), so h.transpose(1, 2) is contiguous.
    """
    check_inputs(q, k, v, i, f)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    C0, n0, m0 = zero_state(q, v) if state is None else state
    B, NH, _, DH = q.shape
    shapes = (B, NH, DH, v.shape[-1]), (B, NH, DH), (B, NH)
    if (C0.shape, n0.shape, m0.shape) != shapes:
        raise ValueError(f"mLSTM state must have shapes {shapes}; got "
                         f"{tuple(C0.shape), tuple(n0.shape), tuple(m0.shape)}")
    dt = q.dtype
    # the per-chunk scores and states are only worth keeping when a backward pass can follow
    keep = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, i, f, C0, n0, m0))
    h, C, n, m = _FusedChunkwise.apply(
        _unit_last(q), _unit_last(k), _unit_last(v), i.to(dt).contiguous(),
        f.to(dt).contiguous(), C0.contiguous(), n0.contiguous(), m0.contiguous(), chunk_size,
        float(eps), keep)
    return h, (C, n, m)

