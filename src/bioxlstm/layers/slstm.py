"""The sLSTM cell (scalar memory with memory mixing): a true recurrence, run step by step.

The input projections for all steps are computed by the caller at once; only the recurrent term
R h_{t-1} (block-diagonal per head) and the pointwise update run inside the loop.
State (h, c, n, m), each (B, NH, DH); a missing state means zeros, and a cell whose normaliser n
is still 0 takes m = i~ as its stabiliser on its first step (SPEC section 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SLSTMState = tuple[Tensor, Tensor, Tensor, Tensor]


def slstm_zero_state(wx: Tensor) -> SLSTMState:
    """Zeros for (h, c, n, m) matching the gate inputs wx of shape (B, S, 4, NH, DH)."""
    B, _, _, NH, DH = wx.shape
    z = wx.new_zeros(B, NH, DH, dtype=torch.float64 if wx.dtype == torch.float64 else torch.float32)
    return z, z, z, z


def slstm_step(wx_t: Tensor, state: SLSTMState, R: Tensor, bias: Tensor) -> SLSTMState:
    """One step. wx_t (B, 4, NH, DH) input part of the gates (i, f, z, o); R (NH, DH, 4 * DH)."""
    h, c, n, m = state
    B, NH, DH = h.shape
    rec = torch.bmm(h.transpose(0, 1), R.to(h.dtype)).view(NH, B, 4, DH).permute(1, 2, 0, 3)
    raw = wx_t.to(h.dtype) + rec + bias.to(h.dtype)
    i_raw, f_raw, z_raw, o_raw = raw.unbind(1)
    lf = F.logsigmoid(f_raw)
    m_new = torch.where(n == 0, i_raw, torch.maximum(i_raw, lf + m))
    ig = torch.exp(i_raw - m_new)
    fg = torch.exp(lf + m - m_new)
    c = fg * c + ig * torch.tanh(z_raw)
    n = fg * n + ig
    h = torch.sigmoid(o_raw) * c / n
    return h, c, n, m_new


def slstm_scan(
    wx: Tensor, R: Tensor, bias: Tensor, state: SLSTMState | None = None
) -> tuple[Tensor, SLSTMState]:
    """Run the recurrence over S steps. wx (B, S, 4, NH, DH) -> h (B, S, NH, DH) and end state."""
    if wx.dim() != 5 or wx.shape[2] != 4:
        raise ValueError(f"sLSTM expects gate inputs of shape (B, S, 4, NH, DH), got {tuple(wx.shape)}")
    state = slstm_zero_state(wx) if state is None else state
    hs = []
    for t in range(wx.shape[1]):
        state = slstm_step(wx[:, t], state, R, bias)
        hs.append(state[0])
    return torch.stack(hs, dim=1).to(wx.dtype), state
