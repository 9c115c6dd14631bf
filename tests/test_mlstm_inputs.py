"""Both input-side implementations equal the mLSTM layer's maths in plain torch operators, values
and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import fused_and_reference_runs, implementations, needs_fast_path

from bioxlstm import preset
from bioxlstm.layers import cpu_build
from bioxlstm.layers.cpu_kernels import MLSTM_INPUTS
from bioxlstm.layers.mlstm_inputs import (
    MAX_BLOCK,
    mlstm_inputs,
    mlstm_inputs_fused,
    mlstm_inputs_supported,
)

OP = "mLSTM input side"
needs_kernel = needs_fast_path(OP)


def reference(x, state, w, b, Wq, Wk, Wv, Wg, bg, NH):
    """The same maths from plain torch operators."""
    K = w.shape[1]
    xp = torch.cat([state, x], dim=1)
    S = x.shape[1]
    pre = b + sum(xp[:, k:k + S] * w[:, k] for k in range(K))
    c = F.silu(pre)

    def bd(t, W):
        return torch.einsum("bsgi,goi->bsgo", t.unflatten(-1, (W.shape[0], W.shape[1])), W).flatten(-2)

    q, k, v = bd(c, Wq), bd(c, Wk), bd(x, Wv)
    gates = torch.cat([q, k, v], -1) @ Wg.t() + bg  # (B, S, 2 NH)
    return c, q, k, v, gates.unflatten(-1, (2, NH)).permute(2, 0, 3, 1)  # (2, B, NH, S)


def run(fn, *args):
    """c, q, k, v and the gates stacked (2, B, NH, S) as `reference` gives them, from an
    implementation's (c, q, k, v, i, f, conv state); the conv state checked here."""
    c, q, k, v, i, f, conv_state = fn(*args)
    x, state = args[:2]
    torch.testing.assert_close(conv_state, torch.cat([state, x], dim=1)[:, x.shape[1]:], rtol=0,
                               atol=0)
    return c, q, k, v, torch.stack([i, f])


def make(B, S, D, K, bs, NH, dtype, strided):
    g = torch.Generator().manual_seed(B * 100 + S)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale).requires_grad_()

    wide = r(B, S, 2 * D)
    x = wide[..., :D] if strided else r(B, S, D)
    return [x, r(B, K - 1, D), r(D, K, scale=0.5), r(D), r(D // bs, bs, bs, scale=0.5),
            r(D // bs, bs, bs, scale=0.5), r(D // bs, bs, bs, scale=0.5), r(2 * NH, 3 * D, scale=0.1),
            r(2 * NH)], wide


@pytest.mark.parametrize("B,S,D,K,bs,NH,strided", [
    (2, 7, 16, 4, 4, 2, True), (1, 1, 8, 4, 4, 1, False), (3, 2, 12, 4, 2, 3, False),
    (2, 5, 16, 2, 8, 4, True), (1, 33, 24, 3, 4, 2, False),
    # blocks of 4 with D not a multiple of 8 (no diagonal path), and D with a vector tail
    (2, 9, 20, 4, 4, 2, True), (1, 6, 10, 3, 2, 1, False),
    # several 256-row backward segments, the last one shorter than the conv's K - 1 halo
    (1, 600, 8, 4, 4, 2, False), (2, 258, 8, 4, 2, 2, True),
])
@pytest.mark.parametrize("impl", implementations(OP))
def test_matches_torch_operators_float64(B, S, D, K, bs, NH, strided, impl):
    args, wide = make(B, S, D, K, bs, NH, torch.float64, strided)
    out = run(mlstm_inputs.implementation(impl), *args, NH)
    ref = reference(*args, NH)
    cots = [torch.randn_like(t) for t in ref]
    grads = torch.autograd.grad(sum((o * c).sum() for o, c in zip(out, cots)), args)
    ref_grads = torch.autograd.grad(sum((o * c).sum() for o, c in zip(ref, cots)), args)
    for o, e in zip(out, ref):
        torch.testing.assert_close(o, e, rtol=1e-12, atol=1e-12)
    for gr, e in zip(grads, ref_grads):
        torch.testing.assert_close(gr, e, rtol=1e-10, atol=1e-10)


@needs_kernel
def test_gradcheck_with_unused_outputs():
    args, _ = make(2, 5, 8, 4, 4, 2, torch.float64, False)
    # only v and the gates used: c, q and k get no gradient from outside
    torch.autograd.gradcheck(lambda *a: [t.sum(0) for t in mlstm_inputs_fused(*a, 2)[3:6]], args)


@pytest.mark.parametrize("impl", implementations(OP))
@pytest.mark.parametrize("S,D", [(64, 32), (37, 20)])
def test_float32_close_to_float64(S, D, impl):
    args, _ = make(2, S, D, 4, 4, 2, torch.float32, False)
    out = run(mlstm_inputs.implementation(impl), *args, 2)
    ref = reference(*[a.double() for a in args], 2)
    for o, e in zip(out, ref):
        torch.testing.assert_close(o.double(), e, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_layer_equals_unfused_layer(monkeypatch):
    """Whole model, with carried state: the fused input side changes nothing but rounding."""
    runs, calls = fused_and_reference_runs(monkeypatch, "tiny-mlstm", OP)
    assert calls == 3 * preset("tiny-mlstm").num_blocks  # every block in all three calls
    for a, e in zip(*runs):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-10)


def test_large_blocks_take_the_torch_operators():
    x, w = torch.zeros(1, 2, 128), torch.zeros(4)
    for bs, taken in ((MAX_BLOCK, True), (MAX_BLOCK + 1, False)):
        W = torch.zeros(1, bs, bs)
        assert mlstm_inputs_supported(x, x, w, w, W, W, W, w, w, 2) is taken


@needs_kernel
@pytest.mark.skipif(not cpu_build.avx512_build_possible(), reason="no AVX-512 on this CPU")
@pytest.mark.parametrize("D,dtype", [(32, torch.float32), (24, torch.float32),
                                     (24, torch.float64), (20, torch.float64)])
def test_avx512_build_equals_portable_build(monkeypatch, D, dtype):
    """The 64-byte-vector build against the 32-byte one: the diagonal path at each width, the
    generic path where D is not a whole number of 64-byte vectors."""
    assert "avx512" in MLSTM_INPUTS.load().__name__
    portable = cpu_build.build_extension(MLSTM_INPUTS.source, "test")
    args, _ = make(2, 70, D, 4, 4, 2, dtype, True)
    cots = None
    results = []
    for module in (MLSTM_INPUTS.load(), portable):
        monkeypatch.setattr(MLSTM_INPUTS, "load", lambda module=module: module)
        out = mlstm_inputs_fused(*args, 2)
        cots = cots or [torch.randn_like(t) for t in out]
        grads = torch.autograd.grad(sum((o * c).sum() for o, c in zip(out, cots)), args)
        results.append([*out, *grads])
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
