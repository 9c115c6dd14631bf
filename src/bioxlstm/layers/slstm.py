"""The sLSTM cell (scalar memory with memory mixing): a true recurrence, run step by step.

The input projections for all steps are computed by the caller at once; only the recurrent term
R h_{t-1} (block-diagonal per head) and the pointwise update run inside the loop.
State (h, c, n, m), each (B, NH, DH); a missing state means zeros, and a cell whose normaliser n
is still 0 takes m = i~ as its stabiliser on its first step (docs/model.md, section 3).

`slstm_scan_steps` is the definition: `slstm_step` in a loop under autograd. The scan that runs,
`slstm_scan`, is `SLSTMScan`, which runs the same loop without recording it and back-propagates
through time by hand. Its backward treats the stabiliser m as a constant, which is exact: c and n
both carry the factor exp(-m), so h = sigma(o) c / n does not depend on it. It has two
implementations of its loops, the PyTorch ones below (`slstm_scan_reference`) and compiled ones
(`slstm_cpu`, `slstm_scan_fused`), and `slstm_scan` dispatches between them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from bioxlstm.layers import slstm_cpu
from bioxlstm.layers.cpu_kernels import SLSTM_SCAN
from bioxlstm.layers.fast_paths import FastPath

SLSTMState = tuple[Tensor, Tensor, Tensor, Tensor]
Loops = tuple[Callable[..., tuple[Tensor, ...]], Callable[..., tuple[Tensor, ...]]]


def slstm_zero_state(wx: Tensor) -> SLSTMState:
    """Zeros for (h, c, n, m) matching the gate inputs wx of shape (B, S, 4, NH, DH)."""
    B, _, _, NH, DH = wx.shape
    z = wx.new_zeros(B, NH, DH, dtype=torch.float64 if wx.dtype == torch.float64 else torch.float32)
    return z, z, z, z


def _recurrent(h: Tensor, R: Tensor) -> Tensor:
    """R h per head: h (B, NH, DH), R (NH, DH, 4 DH) -> (B, 4, NH, DH)."""
    B, NH, DH = h.shape
    return torch.bmm(h.transpose(0, 1), R).view(NH, B, 4, DH).permute(1, 2, 0, 3)


def slstm_step(wx_t: Tensor, state: SLSTMState, R: Tensor, bias: Tensor) -> SLSTMState:
    """One step. wx_t (B, 4, NH, DH) input part of the gates (i, f, z, o); R (NH, DH, 4 * DH)."""
    h, c, n, m = state
    raw = wx_t.to(h.dtype) + _recurrent(h, R.to(h.dtype)) + bias.to(h.dtype)
    i_raw, f_raw, z_raw, o_raw = raw.unbind(1)
    lf = F.logsigmoid(f_raw)
    m_new = torch.where(n == 0, i_raw, torch.maximum(i_raw, lf + m))
    ig = torch.exp(i_raw - m_new)
    fg = torch.exp(lf + m - m_new)
    c = fg * c + ig * torch.tanh(z_raw)
    n = fg * n + ig
    h = torch.sigmoid(o_raw) * c / n
    return h, c, n, m_new


def slstm_scan_steps(
    wx: Tensor, R: Tensor, bias: Tensor, state: SLSTMState | None = None
) -> tuple[Tensor, SLSTMState]:
    """The scan as a loop of `slstm_step` under autograd: the definition both of `slstm_scan`'s
    implementations are held to."""
    _check(wx)
    state = slstm_zero_state(wx) if state is None else state
    hs = []
    for t in range(wx.shape[1]):
        state = slstm_step(wx[:, t], state, R, bias)
        hs.append(state[0])
    return torch.stack(hs, dim=1).to(wx.dtype), state


class SLSTMScan(torch.autograd.Function):
    """The scan with a hand-written backward through time; gradients reach wx, R, bias, h0, c0, n0.

    `loops` is the pair (forward loop, backward loop) that does the work: `_forward_loop` and
    `_backward_loop` below, or their compiled twins in `slstm_cpu`. Buffers are batch-major,
    (B, S, ...), like wx and the output, so no layout copies are needed around the loops. The
    returned end state (c, n, m) is not differentiable; the end h is h[:, -1].
    """

    @staticmethod
    def forward(ctx, wx: Tensor, R: Tensor, bias: Tensor, h0: Tensor, c0: Tensor, n0: Tensor,
                m0: Tensor, loops: Loops):
        dt = h0.dtype
        args = [t.to(dt).contiguous() for t in (wx, bias, R, h0, c0, n0, m0)]
        hs, cs, ns, acts, m = loops[0](*args)
        _, _, Rd, h0d, c0d, n0d, _ = args
        c, n = cs[:, -1], ns[:, -1]
        ctx.save_for_backward(Rd, h0d, c0d, n0d, hs, cs, ns, acts)
        ctx.in_dtypes = (wx.dtype, R.dtype, bias.dtype)
        ctx.backward_loop = loops[1]
        ctx.mark_non_differentiable(c, n, m)
        return hs.to(wx.dtype), hs[:, -1].clone(), c, n, m

    @staticmethod
    def backward(ctx, d_out: Tensor, d_h_end: Tensor, *_):
        Rd, h0, c0, n0, hs, cs, ns, acts = ctx.saved_tensors
        d_out = d_out.to(hs.dtype).contiguous()
        dh_end = d_h_end.to(hs.dtype).contiguous() if d_h_end is not None else torch.zeros_like(h0)
        Rt = Rd.transpose(1, 2).contiguous()
        d_raw, dh0, dc0, dn0, dR, d_bias = ctx.backward_loop(d_out, dh_end, Rt, h0, c0, n0, hs, cs,
                                                             ns, acts)
        wx_dt, R_dt, b_dt = ctx.in_dtypes
        return (d_raw.to(wx_dt), dR.to(R_dt), d_bias.to(b_dt), dh0, dc0, dn0, None, None)


def _forward_loop(wx: Tensor, bias: Tensor, Rd: Tensor, h0: Tensor, c0: Tensor, n0: Tensor,
                  m0: Tensor):
    """The scan in PyTorch ops, recording what the backward needs (slstm_cpu has the same in C++)."""
    B, S = wx.shape[:2]
    xs = wx + bias
    hs = h0.new_empty(B, S, *h0.shape[1:])
    cs, ns = torch.empty_like(hs), torch.empty_like(hs)
    acts = h0.new_empty(B, S, 5, *h0.shape[1:])  # ig, fg, tanh z, sig o, sig -f
    h, c, n, m = h0, c0, n0, m0
    for t in range(S):
        i_raw, f_raw, z_raw, o_raw = (xs[:, t] + _recurrent(h, Rd)).unbind(1)
        lf = F.logsigmoid(f_raw)
        m_new = torch.where(n == 0, i_raw, torch.maximum(i_raw, lf + m))
        a = acts[:, t]
        torch.exp(i_raw - m_new, out=a[:, 0])
        torch.exp(lf + m - m_new, out=a[:, 1])
        torch.tanh(z_raw, out=a[:, 2])
        torch.sigmoid(o_raw, out=a[:, 3])
        torch.sigmoid(-f_raw, out=a[:, 4])
        c = torch.addcmul(a[:, 1] * c, a[:, 0], a[:, 2], out=cs[:, t])
        n = torch.add(a[:, 1] * n, a[:, 0], out=ns[:, t])
        h = torch.mul(a[:, 3], c / n, out=hs[:, t])
        m = m_new
    return hs, cs, ns, acts, m


def _backward_loop(d_out: Tensor, dh_end: Tensor, Rt: Tensor, h0: Tensor, c0: Tensor, n0: Tensor,
                   hs: Tensor, cs: Tensor, ns: Tensor, acts: Tensor):
    """Back-propagation through time in PyTorch ops.

    Returns d_raw (B, S, 4, NH, DH), the gradients of h0, c0, n0, and those of R and the bias.
    """
    B, S, _, NH, DH = acts.shape
    d_raw = acts.new_empty(B, S, 4, NH, DH)
    dh_rec = dh_end
    dc_next = torch.zeros_like(dh_end)
    dn_next = torch.zeros_like(dh_end)
    for t in range(S - 1, -1, -1):
        ig, fg, tz, so, sf = acts[:, t].unbind(1)
        c, n = cs[:, t], ns[:, t]
        c_prev, n_prev = (cs[:, t - 1], ns[:, t - 1]) if t > 0 else (c0, n0)
        dh = d_out[:, t] + dh_rec
        r = c / n
        dc = dc_next + dh * so / n
        dn = dn_next - dh * so * r / n
        g = d_raw[:, t]
        torch.mul(dc * tz + dn, ig, out=g[:, 0])
        torch.mul((dc * c_prev + dn * n_prev) * fg, sf, out=g[:, 1])
        torch.mul(dc * ig, 1 - tz * tz, out=g[:, 2])
        torch.mul(dh * r, so * (1 - so), out=g[:, 3])
        dc_next, dn_next = dc * fg, dn * fg
        dh_rec = torch.bmm(g.permute(2, 0, 1, 3).reshape(NH, B, 4 * DH), Rt).transpose(0, 1)
    h_prev = torch.cat([h0.unsqueeze(1), hs[:, :-1]], dim=1)
    dR = torch.einsum("bshd,bsghe->hdge", h_prev, d_raw).reshape(NH, DH, 4 * DH)
    return d_raw, dh_rec, dc_next, dn_next, dR, d_raw.sum((0, 1))


def _scan(wx: Tensor, R: Tensor, bias: Tensor, state: SLSTMState | None,
          loops: Loops) -> tuple[Tensor, SLSTMState]:
    """The recurrence over S steps through `SLSTMScan` with these loops."""
    _check(wx)
    h0, c0, n0, m0 = slstm_zero_state(wx) if state is None else state
    if wx.shape[1] == 0:  # nothing to scan: the state passes through unchanged
        return wx.new_zeros(wx.shape[0], 0, *wx.shape[3:]), (h0, c0, n0, m0)
    out, h, c, n, m = SLSTMScan.apply(wx, R, bias, h0, c0, n0, m0, loops)
    return out, (h, c, n, m)


def slstm_scan_reference(
    wx: Tensor, R: Tensor, bias: Tensor, state: SLSTMState | None = None
) -> tuple[Tensor, SLSTMState]:
    """The scan with its loops in PyTorch operators. wx (B, S, 4, NH, DH) -> h (B, S, NH, DH) and
    the end state."""
    return _scan(wx, R, bias, state, (_forward_loop, _backward_loop))


def slstm_scan_fused(
    wx: Tensor, R: Tensor, bias: Tensor, state: SLSTMState | None = None
) -> tuple[Tensor, SLSTMState]:
    """The scan with its loops compiled (`slstm_cpu`); arguments and results as the reference."""
    return _scan(wx, R, bias, state, (slstm_cpu.forward_loop, slstm_cpu.backward_loop))


def slstm_scan_supported(wx: Tensor, R: Tensor, bias: Tensor, state: SLSTMState | None = None) -> bool:
    """Whether `slstm_scan_fused` takes these inputs: gate inputs on the CPU (all else is converted
    to the state's float32 or float64)."""
    return wx.device.type == "cpu"


slstm_scan = FastPath("sLSTM scan", slstm_scan_reference)
slstm_scan.register("fused", slstm_scan_fused, slstm_scan_supported, SLSTM_SCAN)


def _check(wx: Tensor) -> None:
    if wx.dim() != 5 or wx.shape[2] != 4:
        raise ValueError(f"sLSTM expects gate inputs of shape (B, S, 4, NH, DH), got {tuple(wx.shape)}")
