"""Dense products through oneDNN equal F.linear, values and gradients; other cases are F.linear."""

import pytest
import torch
import torch.nn.functional as F

from bioxlstm.errors import ConfigError
from bioxlstm.layers import dense
from bioxlstm.layers.dense import Linear, linear, split_linear

onednn = pytest.mark.skipif(not dense.onednn_available(), reason="no oneDNN linear in this torch")


@pytest.fixture(params=["onednn", "blas"])
def backend(request, monkeypatch):
    """Run a test with each choice of float32 product, whatever this CPU's vendor prefers."""
    monkeypatch.setenv("BIOXLSTM_DENSE", request.param)
    dense.onednn_preferred.cache_clear()
    yield request.param
    monkeypatch.delenv("BIOXLSTM_DENSE")
    dense.onednn_preferred.cache_clear()


def value_and_grads(fn, x, W):
    y = fn(x, W)
    outs = y if isinstance(y, tuple) else (y,)
    cots = [torch.randn_like(o, generator=torch.Generator().manual_seed(i)) for i, o in
            enumerate(outs)]
    loss = sum((o * c).sum() for o, c in zip(outs, cots))
    return [*outs, *torch.autograd.grad(loss, [t for t in (x, W) if t.requires_grad])]


def test_float32_takes_the_chosen_path(backend):
    if backend == "onednn" and not dense.onednn_available():
        pytest.skip("no oneDNN linear in this torch")
    x = torch.randn(4, 8, requires_grad=True)
    name = linear(x, torch.randn(6, 8)).grad_fn.name()
    assert (name == "_LinearBackward") == (backend == "onednn")


@pytest.mark.parametrize("vendor, want", [("AuthenticAMD", True), ("GenuineIntel", False),
                                          ("", False)])
@onednn
def test_auto_choice_follows_the_cpu_vendor(monkeypatch, vendor, want):
    monkeypatch.delenv("BIOXLSTM_DENSE", raising=False)
    monkeypatch.setattr(dense, "cpu_vendor", lambda: vendor)
    dense.onednn_preferred.cache_clear()
    try:
        assert dense.onednn_preferred() is want
    finally:
        dense.onednn_preferred.cache_clear()


def test_bad_dense_choice_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("BIOXLSTM_DENSE", "gpu")
    dense.onednn_preferred.cache_clear()
    try:
        with pytest.raises(ConfigError, match="BIOXLSTM_DENSE must be one of auto, onednn, blas"):
            linear(torch.randn(3, 8), torch.randn(5, 8))
    finally:
        dense.onednn_preferred.cache_clear()


@pytest.mark.parametrize("shape, transposed, grads", [
    ((2, 37, 24), False, "both"), ((5, 24), True, "both"), ((3, 7, 24), False, "x"),
    ((3, 7, 24), False, "W")])
def test_linear_equals_f_linear(shape, transposed, grads, backend):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape[:-1], shape[-1], generator=g)
    if transposed:  # a non-contiguous input
        x = torch.randn(shape[-1], *shape[:-1], generator=g).t()
    W = torch.randn(40, shape[-1], generator=g)
    x.requires_grad_(grads in ("both", "x"))
    W.requires_grad_(grads in ("both", "W"))
    for got, want in zip(value_and_grads(linear, x, W), value_and_grads(F.linear, x, W)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_other_dtypes_bias_and_autocast_are_f_linear():
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    W = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    assert torch.equal(linear(x, W), F.linear(x, W))
    torch.autograd.gradcheck(linear, (x, W))
    xf, Wf, b = torch.randn(3, 8), torch.randn(5, 8), torch.randn(5)
    assert torch.equal(linear(xf, Wf, b), F.linear(xf, Wf, b))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = linear(xf, Wf), F.linear(xf, Wf)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)


def test_split_linear_float32_equals_chunked_linear(backend):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 33, 16, generator=g, requires_grad=True)
    W = torch.randn(24, 16, generator=g, requires_grad=True)
    got = value_and_grads(split_linear, x, W)
    want = value_and_grads(lambda x, W: F.linear(x, W).chunk(2, dim=-1), x, W)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_linear_module_is_nn_linear_with_the_same_state(backend):
    torch.manual_seed(0)
    ours, ref = Linear(8, 6, bias=False), torch.nn.Linear(8, 6, bias=False)
    ref.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == ["weight"]
    x = torch.randn(4, 8)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_no_extensions_switch_turns_onednn_off(monkeypatch):
    monkeypatch.setenv("BIOXLSTM_NO_EXTENSIONS", "1")
    monkeypatch.setenv("BIOXLSTM_DENSE", "onednn")
    dense.onednn_available.cache_clear()
    dense.onednn_preferred.cache_clear()
    try:
        assert dense.onednn_available() is False and dense.onednn_preferred() is False
        x = torch.randn(3, 8, requires_grad=True)
        assert linear(x, torch.randn(5, 8)).grad_fn.name() != "_LinearBackward"
    finally:
        monkeypatch.delenv("BIOXLSTM_NO_EXTENSIONS")
        monkeypatch.delenv("BIOXLSTM_DENSE")
        dense.onednn_available.cache_clear()
        dense.onednn_preferred.cache_clear()


@pytest.mark.parametrize("use", ["both", "first", "second"])
def test_split_linear_equals_chunked_linear(use):
    """Values and gradients, also when only one half is used (the other's gradient is None)."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6, dtype=torch.float64, requires_grad=True)
    W = torch.randn(8, 6, dtype=torch.float64, requires_grad=True)
    results = []
    for fn in (split_linear, lambda x, W: torch.nn.functional.linear(x, W).chunk(2, dim=-1)):
        a, b = fn(x, W)
        loss = {"both": (a * a).sum() + b.sum(), "first": (a * a).sum(), "second": b.sum()}[use]
        results.append([a, b, *torch.autograd.grad(loss, [x, W])])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.autograd.gradcheck(lambda x, W: split_linear(x, W), (x, W))
