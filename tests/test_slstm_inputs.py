"""Both sLSTM input-side implementations equal the layer's maths in plain torch operators, values
and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import fused_and_reference_runs, implementations, needs_fast_path

from bioxlstm import preset
from bioxlstm.layers.slstm_inputs import slstm_inputs, slstm_inputs_fused, slstm_inputs_supported

OP = "sLSTM input side"
needs_kernel = needs_fast_path(OP)


def reference(x, state, w, b, W):
    """conv + SiLU and the four block-diagonal gate inputs from plain torch operators."""
    K, S = w.shape[1], x.shape[1]
    xp = torch.cat([state, x], dim=1)
    c = F.silu(b + sum(xp[:, k:k + S] * w[:, k] for k in range(K)))
    NH, DH = W.shape[1], W.shape[2]

    def bd(t, Wg):
        return torch.einsum("bshi,hoi->bsho", t.unflatten(-1, (NH, DH)), Wg)

    return torch.stack([bd(c, W[0]), bd(c, W[1]), bd(x, W[2]), bd(x, W[3])], dim=2)


def make(B, S, NH, DH, K, dtype):
    g = torch.Generator().manual_seed(B * 1000 + S * 10 + DH)
    D = NH * DH

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale).requires_grad_()

    return [r(B, S, D), r(B, K - 1, D), r(D, K, scale=0.5), r(D), r(4, NH, DH, DH, scale=0.3)]


def wx_of(impl):
    """An implementation's wx alone, its conv state checked: the last K - 1 rows of [state; x]."""
    def run(x, state, *weights):
        wx, conv_state = slstm_inputs.implementation(impl)(x, state, *weights)
        torch.testing.assert_close(conv_state, torch.cat([state, x], 1)[:, x.shape[1]:], rtol=0,
                                   atol=0)
        return wx
    return run


def value_and_grads(fn, args):
    out = fn(*args)
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(1),
                      dtype=torch.float64).to(out.dtype)
    return [out, *torch.autograd.grad((out * cot).sum(), args)]


# heads of 16, 32 and 64 (register-resident forms) and others; one token; K = 2; a long sequence
@pytest.mark.parametrize("B,S,NH,DH,K", [
    (2, 9, 2, 16, 4), (2, 30, 4, 32, 4), (1, 5, 1, 64, 3), (2, 7, 2, 4, 4), (1, 1, 3, 5, 4),
    (3, 4, 1, 3, 2), (1, 300, 2, 32, 4)])
@pytest.mark.parametrize("impl", implementations(OP))
def test_matches_torch_operators_float64(B, S, NH, DH, K, impl):
    args = make(B, S, NH, DH, K, torch.float64)
    got = value_and_grads(wx_of(impl), args)
    want = value_and_grads(reference, args)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, rtol=1e-11, atol=1e-11)


@needs_kernel
def test_gradcheck():
    args = make(2, 6, 2, 4, 3, torch.float64)
    torch.autograd.gradcheck(slstm_inputs_fused, args)


@pytest.mark.parametrize("impl", implementations(OP))
@pytest.mark.parametrize("DH", [32, 12])
def test_float32_close_to_float64(DH, impl):
    args = make(2, 40, 4, DH, 4, torch.float32)
    got = value_and_grads(wx_of(impl), args)
    want = value_and_grads(reference, [a.detach().double().requires_grad_() for a in args])
    for a, e in zip(got, want):
        torch.testing.assert_close(a.double(), e, rtol=1e-4, atol=1e-4)


@needs_kernel
def test_layer_equals_unfused_layer(monkeypatch):
    """Whole sLSTM model, with carried state: the fused input side changes nothing but rounding."""
    runs, calls = fused_and_reference_runs(monkeypatch, "tiny-slstm", OP)
    assert calls == 3 * preset("tiny-slstm").num_blocks  # every block in all three calls
    for a, e in zip(*runs):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-10)


def test_other_dtypes_take_the_torch_operators():
    x, w, W = torch.zeros(1, 2, 8, dtype=torch.bfloat16), torch.zeros(8, 4), torch.zeros(4, 2, 4, 4)
    state = torch.zeros(1, 3, 8)
    assert not slstm_inputs_supported(x, state, w.bfloat16(), w[:, 0], W.bfloat16())
    assert not slstm_inputs_supported(x.float(), state, w.double(), w[:, 0], W.double())
    assert slstm_inputs_supported(x.float(), state, w, w[:, 0], W)
