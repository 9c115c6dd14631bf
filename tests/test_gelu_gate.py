"""Both GELU-gate implementations equal F.gelu(a) * b, values and gradients, alone and in the FFN."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import fused_and_reference_runs, implementations, needs_fast_path

from bioxlstm import XLSTMLanguageModel, preset
from bioxlstm.layers import blocks
from bioxlstm.layers.gelu_gate import gelu_gate, gelu_gate_fused, gelu_gate_supported

OP = "GELU gate"
needs_kernel = needs_fast_path(OP)


def halves(shape, dtype, seed=0):
    """a and b as the strided halves of one tensor, as the FFN's split projection gives them."""
    g = torch.Generator().manual_seed(seed)
    u = (torch.randn(*shape[:-1], 2 * shape[-1], generator=g, dtype=dtype) * 2).requires_grad_()
    return u, *u.chunk(2, dim=-1)


def value_and_grad(fn, u, a, b):
    out = fn(a, b)
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    return [out, *torch.autograd.grad((out * cot).sum(), u)]


@pytest.mark.parametrize("impl", implementations(OP))
@pytest.mark.parametrize("shape", [(2, 7, 5), (1, 1, 1), (3, 40, 192), (64, 33)])
def test_matches_torch_operators_float64(shape, impl):
    u, a, b = halves(shape, torch.float64)
    got = value_and_grad(gelu_gate.implementation(impl), u, a, b)
    want = value_and_grad(lambda a, b: F.gelu(a) * b, u, a, b)
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", implementations(OP))
def test_contiguous_inputs_and_float32(impl):
    g = torch.Generator().manual_seed(2)
    a, b = (torch.randn(4, 9, 16, generator=g).requires_grad_() for _ in range(2))
    got = value_and_grad(gelu_gate.implementation(impl), [a, b], a, b)
    want = value_and_grad(lambda a, b: F.gelu(a) * b, [a, b], a, b)
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


@needs_kernel
def test_gradcheck():
    u, a, b = halves((2, 3, 4), torch.float64, seed=3)
    assert torch.autograd.gradcheck(gelu_gate_fused, (a, b))


@needs_kernel
def test_ffn_equals_unfused_ffn(monkeypatch):
    """Whole sLSTM model (its blocks' FFNs): the fused kernel changes nothing but rounding."""
    runs, calls = fused_and_reference_runs(monkeypatch, "tiny-slstm", OP)
    ffns = sum(isinstance(m, blocks.GatedFFN)
               for m in XLSTMLanguageModel(preset("tiny-slstm")).modules())
    assert ffns > 0 and calls == 3 * ffns  # every FFN in all three calls
    for a, e in zip(*runs):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-10)


def test_other_dtypes_and_shapes_take_the_torch_operators():
    a = torch.zeros(2, 4)
    assert gelu_gate_supported(a, a)
    assert not gelu_gate_supported(a.bfloat16(), a.bfloat16())
    assert not gelu_gate_supported(a, a.double())
    assert not gelu_gate_supported(a, torch.zeros(2, 5))
