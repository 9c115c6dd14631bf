"""The mLSTM cell (matrix memory) in three exact forms: parallel, chunkwise and recurrent.

All three compute docs/model.md section 1 from the same state convention, so they agree to rounding:
the state is (C, n, m) with C (B, NH, DH, DH), n (B, NH, DH) and m (B, NH); a missing state
means zeros with m = 0. Inputs: q, k, v (B, NH, S, DH); gate pre-activations i, f (B, NH, S).
Gates and stabilisers are computed in at least float32 whatever the input dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

MLSTMState = tuple[Tensor, Tensor, Tensor]

EPS = 1e-6


def zero_state(q: Tensor, v: Tensor) -> MLSTMState:
    """The empty state (C = 0, n = 0, m = 0) matching q and v's batch, heads and dtype."""
    B, NH, _, DH = q.shape
    dtype = _state_dtype(q.dtype)
    C = q.new_zeros(B, NH, DH, v.shape[-1], dtype=dtype)
    n = q.new_zeros(B, NH, DH, dtype=dtype)
    m = q.new_zeros(B, NH, dtype=dtype)
    return C, n, m


def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_inputs(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor) -> None:
    """Raise ValueError unless q, k, v are (B, NH, S, DH) alike and i, f are (B, NH, S)."""
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"mLSTM expects q, k, v of shape (B, NH, S, DH); got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if i.shape != q.shape[:3] or f.shape != q.shape[:3]:
        raise ValueError(
            f"mLSTM expects gates of shape {tuple(q.shape[:3])}; got {tuple(i.shape)}, "
            f"{tuple(f.shape)}"
        )


def _chunks(
    q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, state: MLSTMState, L: int, eps: float
) -> tuple[Tensor, MLSTMState]:
    """The core of every sequence form, for a length that is a multiple of the chunk size L.

    Chunks are processed together: their local key/value sums in one batch, the chunk-to-chunk
    state recurrence as a short loop of elementwise updates, then all outputs in one batch.
    With a single chunk this is the parallel form started from `state`.
    """
    C0, n0, m0 = state
    cdt = C0.dtype
    B, NH, S, DH = q.shape
    DV = v.shape[-1]
    NC = S // L
    qs = q.to(cdt).reshape(B, NH, NC, L, DH)
    ks = (k.to(cdt) / math.sqrt(DH)).reshape(B, NH, NC, L, DH)
    vs = v.to(cdt).reshape(B, NH, NC, L, DV)
    ig = i.to(cdt).reshape(B, NH, NC, L)
    lf = F.logsigmoid(f.to(cdt)).reshape(B, NH, NC, L)
    b = lf.cumsum(-1)  # log decay from the chunk start to t, inclusive
    # decay[t, j] = sum_{l=j+1..t} lf_l as a masked cumulative sum: a difference of two
    # cumulative sums would lose float32 accuracy over long chunks
    below = torch.ones(L, L, dtype=torch.bool, device=q.device).tril(-1)
    decay = (lf.unsqueeze(-1) * below).cumsum(-2)
    causal = below | torch.eye(L, dtype=torch.bool, device=q.device)
    log_d = (decay + ig.unsqueeze(-2)).masked_fill(~causal, float("-inf"))
    g = b[..., -1]  # (B, NH, NC) log decay across each chunk

    # each chunk's own contribution to the state at its end, stabilised by its own max a
    log_in = decay[..., -1, :] + ig
    a = log_in.amax(-1)
    kw = ks * torch.exp(log_in - a.unsqueeze(-1)).unsqueeze(-1)
    kv = kw.transpose(-1, -2) @ vs  # (B, NH, NC, DH, DV)
    kn = kw.sum(-2)  # (B, NH, NC, DH)

    # state entering each chunk: a sequential scan over chunks of elementwise updates only
    Cs, ns, ms = [C0], [n0], [m0]
    C, n, m = C0, n0, m0
    # unbind once: indexing a chunk per step would make autograd copy the whole tensor per step
    for g_c, a_c, kv_c, kn_c in zip(g.unbind(2), a.unbind(2), kv.unbind(2), kn.unbind(2)):
        m_new = torch.maximum(g_c + m, a_c)
        ws = torch.exp(g_c + m - m_new)
        wi = torch.exp(a_c - m_new)
        C = ws[..., None, None] * C + wi[..., None, None] * kv_c
        n = ws.unsqueeze(-1) * n + wi.unsqueeze(-1) * kn_c
        m = m_new
        Cs.append(C)
        ns.append(n)
        ms.append(m)
    C_in = torch.stack(Cs[:-1], dim=2)  # (B, NH, NC, DH, DV)
    n_in = torch.stack(ns[:-1], dim=2)
    m_in = torch.stack(ms[:-1], dim=2)  # (B, NH, NC)

    # outputs of all chunks at once: intra-chunk quadratic part plus the incoming state
    log_state = b + m_in.unsqueeze(-1)
    m_t = torch.maximum(log_d.amax(-1), log_state)
    scores = (qs @ ks.transpose(-1, -2)) * torch.exp(log_d - m_t.unsqueeze(-1))
    state_w = torch.exp(log_state - m_t).unsqueeze(-1)
    num = scores @ vs + state_w * (qs @ C_in)
    qn = scores.sum(-1, keepdim=True) + state_w * (qs @ n_in.unsqueeze(-1))
    denom = torch.maximum(qn.abs(), torch.exp(-m_t).unsqueeze(-1)) + eps
    h = (num / denom).reshape(B, NH, S, DV).to(q.dtype)
    return h, (C, n, m)


def mlstm_parallel(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    i: Tensor,
    f: Tensor,
    state: MLSTMState | None = None,
    return_state: bool = False,
    eps: float = EPS,
) -> Tensor | tuple[Tensor, MLSTMState]:
    """Quadratic-memory form: every output from one S x S decay matrix per head."""
    check_inputs(q, k, v, i, f)
    state = zero_state(q, v) if state is None else state
    h, end = _chunks(q, k, v, i, f, state, q.shape[2], eps) if q.shape[2] else (v[:, :, :0], state)
    return (h, end) if return_state else h


def mlstm_chunkwise(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    i: Tensor,
    f: Tensor,
    state: MLSTMState | None = None,
    return_state: bool = False,
    chunk_size: int = 64,
    eps: float = EPS,
) -> Tensor | tuple[Tensor, MLSTMState]:
    """Linear-memory form: parallel inside chunks of `chunk_size`, (C, n, m) carried between them.

    A tail shorter than a chunk is one more, shorter chunk started from the carried state.
    """
    check_inputs(q, k, v, i, f)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    state = zero_state(q, v) if state is None else state
    S = q.shape[2]
    full = S - S % chunk_size
    outs = []
    for start, stop, L in ((0, full, chunk_size), (full, S, S - full)):
        if stop > start:
            part = (t[:, :, start:stop] for t in (q, k, v, i, f))
            h, state = _chunks(*part, state, L, eps)
            outs.append(h)
    h = outs[0] if len(outs) == 1 else torch.cat(outs or [v[:, :, :0]], dim=2)
    return (h, state) if return_state else h


def mlstm_step(
    q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, state: MLSTMState, eps: float = EPS
) -> tuple[Tensor, MLSTMState]:
    """One token: q, k, v (B, NH, DH), i, f (B, NH); returns h (B, NH, DH) and the new state."""
    C, n, m = state
    cdt = C.dtype
    DH = q.shape[-1]
    lf = F.logsigmoid(f.to(cdt))
    ig = i.to(cdt)
    m_new = torch.maximum(lf + m, ig)
    fw = torch.exp(lf + m - m_new)
    iw = torch.exp(ig - m_new)
    ks = k.to(cdt) / math.sqrt(DH)
    qs = q.to(cdt)
    C = fw[..., None, None] * C + iw[..., None, None] * (ks.unsqueeze(-1) * v.to(cdt).unsqueeze(-2))
    n = fw.unsqueeze(-1) * n + iw.unsqueeze(-1) * ks
    num = (qs.unsqueeze(-2) @ C).squeeze(-2)
    qn = (qs * n).sum(-1, keepdim=True)
    denom = torch.maximum(qn.abs(), torch.exp(-m_new).unsqueeze(-1)) + eps
    return (num / denom).to(q.dtype), (C, n, m_new)


def mlstm_recurrent(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    i: Tensor,
    f: Tensor,
    state: MLSTMState | None = None,
    return_state: bool = False,
    eps: float = EPS,
) -> Tensor | tuple[Tensor, MLSTMState]:
    """Constant-memory form: one token at a time from the state, as used for generation."""
    check_inputs(q, k, v, i, f)
    state = zero_state(q, v) if state is None else state
    hs = []
    for t in range(q.shape[2]):
        h, state = mlstm_step(q[:, :, t], k[:, :, t], v[:, :, t], i[:, :, t], f[:, :, t], state, eps)
        hs.append(h)
    h = torch.stack(hs, dim=2) if hs else v[:, :, :0]
    return (h, state) if return_state else h
