"""Norms, causal conv (with state), block-diagonal linear and rotary embeddings."""

import pytest
import torch

from bioxlstm.layers.primitives import (
    BlockDiagonalLinear,
    CausalConv1d,
    LayerNorm,
    MultiHeadNorm,
    rotary,
)


def test_layernorm_weight_is_one_plus_gamma_without_bias():
    ln = LayerNorm(6)
    x = torch.randn(3, 6)
    expected = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(ln(x), expected)
    with torch.no_grad():
        ln.weight.fill_(1.0)
    torch.testing.assert_close(ln(x), 2 * expected)
    assert [n for n, _ in ln.named_parameters()] == ["weight"]


def test_multihead_norm_normalises_each_head_separately():
    norm = MultiHeadNorm(2, 4)
    x = torch.randn(3, 2, 4)
    x[:, 1] *= 100
    y = norm(x).view(3, 2, 4)
    torch.testing.assert_close(y.mean(-1), torch.zeros(3, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(3, 2), atol=1e-3, rtol=0)


def test_causal_conv_is_causal_and_state_carries():
    conv = CausalConv1d(5, 4).double()
    x = torch.randn(2, 20, 5, dtype=torch.float64)
    y, _ = conv(x)
    x2 = x.clone()
    x2[:, 10:] += 1.0
    assert torch.equal(conv(x2)[0][:, :10], y[:, :10])
    y1, s = conv(x[:, :7])
    y2, _ = conv(x[:, 7:], s)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y)
    steps, s = [], None
    for t in range(20):
        out, s = conv(x[:, t:t + 1], s)
        steps.append(out)
    torch.testing.assert_close(torch.cat(steps, 1), y)


def test_causal_conv_matches_padded_conv1d():
    conv = CausalConv1d(3, 4)
    x = torch.randn(1, 9, 3)
    ref = torch.nn.functional.conv1d(x.transpose(1, 2), conv.weight.unsqueeze(1), conv.bias, padding=3,
                                     groups=3)
    torch.testing.assert_close(conv(x)[0], ref[..., :9].transpose(1, 2))


@pytest.mark.parametrize("block_size,min_elements", [(4, 0), (4, 10**9), (16, 0)])
def test_block_diagonal_linear_equals_dense_block_matrix(block_size, min_elements, monkeypatch):
    monkeypatch.setattr(BlockDiagonalLinear, "MIN_ELEMENTS", min_elements)
    bd = BlockDiagonalLinear(32, block_size).double()
    torch.nn.init.normal_(bd.weight)
    dense = torch.block_diag(*bd.weight)
    x = torch.randn(3, 5, 32, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(bd(x), x @ dense.T)
    assert torch.autograd.gradcheck(bd, (x,))
    up = torch.randn(3, 5, 32, dtype=torch.float64)
    (bd(x) * up).sum().backward()
    ref_w = torch.einsum("nho,nhi->hoi", up.reshape(-1, 32 // block_size, block_size),
                         x.detach().reshape(-1, 32 // block_size, block_size))
    torch.testing.assert_close(bd.weight.grad, ref_w)


def test_rotary_preserves_norm_and_depends_on_relative_position():
    q, k = torch.randn(2, 1, 1, 1, 8).unbind(0)
    pos = lambda p: torch.tensor([[p]])  # noqa: E731
    torch.testing.assert_close(rotary(q, pos(5), 1e4).norm(), q.norm())
    dot = lambda a, b: (rotary(q, pos(a), 1e4) * rotary(k, pos(b), 1e4)).sum()  # noqa: E731
    torch.testing.assert_close(dot(7, 3), dot(104, 100))
    assert not torch.allclose(dot(7, 3), dot(7, 4))


def test_causal_conv_gradients_match_autograd_of_padded_conv1d():
    conv = CausalConv1d(3, 4).double()
    x = torch.randn(2, 11, 3, dtype=torch.float64, requires_grad=True)
    state = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, s: conv(x, s)[0], (x, state))
    y, _ = conv(x)
    ref = torch.nn.functional.conv1d(x.transpose(1, 2), conv.weight.unsqueeze(1), conv.bias, padding=3,
                                     groups=3)[..., :11].transpose(1, 2)
    up = torch.randn_like(y)
    grads = torch.autograd.grad((y * up).sum(), (x, conv.weight, conv.bias))
    ref_grads = torch.autograd.grad((ref * up).sum(), (x, conv.weight, conv.bias))
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)
