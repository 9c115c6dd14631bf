"""The sLSTM scan's loops compiled (csrc/slstm_scan.cpp): the same arithmetic as `slstm`'s PyTorch
loops, with the same arguments and results, for `SLSTMScan`.

Every (batch, head) pair is its own recurrence, so the loops run over time inside one parallel
region (built with -fopenmp, without which at::parallel_for runs on one thread), with the small
recurrent matvec written out by hand in eight independent chains of vector sums: no per-step
allocation, dispatch or thread synchronisation. The gate arithmetic is vectorised through glibc's
libmvec where `cpu_build` finds it, with an AVX2 clone picked at load time, or a whole AVX-512
build on a CPU that has it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bioxlstm.layers.cpu_kernels import SLSTM_SCAN


def forward_loop(wx: Tensor, bias: Tensor, Rd: Tensor, h0: Tensor, c0: Tensor, n0: Tensor,
                 m0: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """hs, cs, ns (B, S, NH, DH), acts (B, S, 5, NH, DH) and the end m; as `slstm._forward_loop`."""
    with torch.autocast("cpu", enabled=False):  # the kernel reads float/double buffers
        return tuple(SLSTM_SCAN.load().forward(wx, bias, Rd, h0, c0, n0, m0))


def backward_loop(d_out: Tensor, dh_end: Tensor, Rt: Tensor, h0: Tensor, c0: Tensor, n0: Tensor,
                  hs: Tensor, cs: Tensor, ns: Tensor, acts: Tensor) -> tuple[Tensor, ...]:
    """d_raw, the gradients of h0, c0, n0, R and the bias; as `slstm._backward_loop`."""
    NH, DH = hs.shape[2:]
    with torch.autocast("cpu", enabled=False):
        d_raw, dh0, dc0, dn0, dR_parts, db_parts = SLSTM_SCAN.load().backward(
            d_out, dh_end, Rt, h0, c0, n0, hs, cs, ns, acts)
    d_bias = db_parts.sum(0).view(NH, 4, DH).transpose(0, 1)
    return d_raw, dh0, dc0, dn0, dR_parts.sum(0), d_bias
