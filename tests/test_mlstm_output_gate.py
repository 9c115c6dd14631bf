"""Both output-gate implementations equal the mLSTM layer's PyTorch operators, values and gradients."""

import pytest
import torch
import torch.nn.functional as F
from conftest import implementations, needs_fast_path

from bioxlstm.layers.mlstm_output_gate import output_gate, output_gate_fused, output_gate_supported
from bioxlstm.layers.primitives import MultiHeadNorm

OP = "mLSTM output gate"


@pytest.mark.parametrize("impl", implementations(OP))
@pytest.mark.parametrize("NH, DH", [(4, 16), (1, 8), (3, 5)])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_output_gate_matches_torch(NH, DH, dtype, tol, impl):
    """h in the cell's (B, NH, S, DH)-transposed layout, z a row-strided half of the up-projection."""
    torch.manual_seed(0)
    B, S = 2, 7
    h = torch.randn(B, NH, S, DH, dtype=dtype).transpose(1, 2).requires_grad_(True)
    up = torch.randn(B, S, 2 * NH * DH, dtype=dtype, requires_grad=True)
    c = torch.randn(B, S, NH * DH, dtype=dtype, requires_grad=True)
    skip = torch.randn(NH * DH, dtype=dtype, requires_grad=True)
    norm = MultiHeadNorm(NH, DH).to(dtype)
    with torch.no_grad():
        norm.weight.normal_()
    results = []
    for tested in (True, False):
        z = up.chunk(2, dim=-1)[1]
        if tested:
            y = output_gate.implementation(impl)(h, c, z, norm.weight, skip, norm.eps)
        else:
            y = torch.addcmul(norm(h), skip, c) * F.silu(z)
        w = torch.randn(y.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
        results.append([y, *torch.autograd.grad((y * w).sum(), [h, up, c, norm.weight, skip])])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@needs_fast_path(OP)
def test_gradcheck():
    torch.manual_seed(0)
    h, c, z = (torch.randn(2, 3, 2, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    w, skip = (torch.randn(8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    torch.autograd.gradcheck(
        lambda h, c, z, w, s: output_gate_fused(h, c.flatten(-2), z.flatten(-2), w, s, 1e-5),
        (h, c, z, w, skip))


def test_other_dtypes_take_the_torch_operators():
    h, c = torch.zeros(1, 2, 2, 4), torch.zeros(1, 2, 8)
    w = torch.zeros(8)
    assert output_gate_supported(h, c, c, w, w, 1e-5)
    assert not output_gate_supported(h.bfloat16(), c, c, w, w, 1e-5)
    assert not output_gate_supported(h.double(), c.double(), c.double(), w, w.double(), 1e-5)
