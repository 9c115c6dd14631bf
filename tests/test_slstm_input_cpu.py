"""The fused sLSTM input-side kernel equals the layer's PyTorch operators, values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import fused_and_unfused_runs

from bioxlstm import preset
from bioxlstm.layers import slstm_input_cpu
from bioxlstm.layers.cpu_kernels import SLSTM_INPUTS

pytestmark = pytest.mark.skipif(SLSTM_INPUTS.load() is None, reason="kernel not built")


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


def value_and_grads(fn, args):
    out = fn(*args)
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(1),
                      dtype=torch.float64).to(out.dtype)
    return [out, *torch.autograd.grad((out * cot).sum(), args)]


# heads of 16, 32 and 64 (register-resident forms) and others; one token; K = 2; a long sequence
@pytest.mark.parametrize("B,S,NH,DH,K", [
    (2, 9, 2, 16, 4), (2, 30, 4, 32, 4), (1, 5, 1, 64, 3), (2, 7, 2, 4, 4), (1, 1, 3, 5, 4),
    (3, 4, 1, 3, 2), (1, 300, 2, 32, 4)])
def test_matches_torch_operators_float64(B, S, NH, DH, K):
    args = make(B, S, NH, DH, K, torch.float64)
    got = value_and_grads(slstm_input_cpu.slstm_inputs_fused, args)
    want = value_and_grads(reference, args)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, rtol=1e-11, atol=1e-11)


def test_gradcheck():
    args = make(2, 6, 2, 4, 3, torch.float64)
    torch.autograd.gradcheck(slstm_input_cpu.slstm_inputs_fused, args)


@pytest.mark.parametrize("DH", [32, 12])
def test_float32_close_to_float64(DH):
    args = make(2, 40, 4, DH, 4, torch.float32)
    got = value_and_grads(slstm_input_cpu.slstm_inputs_fused, args)
    want = value_and_grads(reference, [a.detach().double().requires_grad_() for a in args])
    for a, e in zip(got, want):
        torch.testing.assert_close(a.double(), e, rtol=1e-4, atol=1e-4)


def test_layer_equals_unfused_layer(monkeypatch):
    """Whole sLSTM model, with carried state: the fused input side changes nothing but rounding."""
    runs, calls = fused_and_unfused_runs(monkeypatch, "tiny-slstm", "slstm_inputs_fused",
                                         "slstm_inputs_supported")
    assert calls == 3 * preset("tiny-slstm").num_blocks  # every block in all three calls
    for a, e in zip(*runs):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-10)


def test_other_dtypes_take_the_torch_operators():
    x = torch.zeros(1, 2, 8, dtype=torch.bfloat16)
    assert not slstm_input_cpu.slstm_inputs_supported(x, torch.zeros(4, dtype=torch.bfloat16))
    assert not slstm_input_cpu.slstm_inputs_supported(x.float(), torch.zeros(4, dtype=torch.float64))
    assert slstm_input_cpu.slstm_inputs_supported(x.float(), torch.zeros(4))

