"""The sLSTM cell: scan == step by step, state carried across calls, against a naive reference;
each test of the scan runs both of its implementations (PyTorch loops, compiled loops)."""

import pytest
import torch
import torch.nn.functional as F
from conftest import count_calls, implementations, needs_fast_path

from bioxlstm.layers import cpu_build
from bioxlstm.layers.cpu_kernels import SLSTM_SCAN
from bioxlstm.layers.slstm import slstm_scan, slstm_scan_steps, slstm_step

OP = "sLSTM scan"


@pytest.fixture(params=implementations(OP))
def scan(request):
    """Each implementation of the scan, called as `slstm_scan`."""
    return slstm_scan.implementation(request.param)


def inputs(B=2, S=33, NH=2, DH=4, dtype=torch.float64, scale=1.0):
    wx = torch.randn(B, S, 4, NH, DH, dtype=dtype) * scale
    R = torch.randn(NH, DH, 4 * DH, dtype=dtype) * 0.3
    b = torch.randn(4, NH, DH, dtype=dtype)
    return wx, R, b


def naive_slstm(wx, R, b):
    """The sLSTM of docs/model.md section 3 without the stabiliser: c~ and n~ grow as exp(i)."""
    B, S, _, NH, DH = wx.shape
    h = c = n = torch.zeros(B, NH, DH, dtype=wx.dtype)
    out = []
    for t in range(S):
        rec = torch.einsum("bhd,hde->bhe", h, R).view(B, NH, 4, DH).transpose(1, 2)
        i, f, z, o = (wx[:, t] + rec + b).unbind(1)
        c = torch.sigmoid(f) * c + torch.exp(i) * torch.tanh(z)
        n = torch.sigmoid(f) * n + torch.exp(i)
        h = torch.sigmoid(o) * c / n
        out.append(h)
    return torch.stack(out, 1)


def test_scan_matches_naive_reference(scan):
    wx, R, b = inputs()
    h, _ = scan(wx, R, b)
    torch.testing.assert_close(h, naive_slstm(wx, R, b), atol=1e-10, rtol=1e-9)


def test_scan_equals_step_by_step(scan):
    wx, R, b = inputs()
    h, end = scan(wx, R, b)
    state = tuple(torch.zeros(2, 2, 4, dtype=wx.dtype) for _ in range(4))
    for t in range(wx.shape[1]):
        state = slstm_step(wx[:, t], state, R, b)
        torch.testing.assert_close(state[0], h[:, t], atol=1e-13, rtol=1e-12)
    for a, e in zip(state, end):
        torch.testing.assert_close(a, e, atol=1e-13, rtol=1e-12)


def test_split_with_state_equals_one_call(scan):
    wx, R, b = inputs(S=40)
    full, end = scan(wx, R, b)
    h1, mid = scan(wx[:, :13], R, b)
    h2, end2 = scan(wx[:, 13:], R, b, mid)
    torch.testing.assert_close(torch.cat([h1, h2], 1), full, atol=1e-12, rtol=1e-12)
    for a, e in zip(end, end2):
        torch.testing.assert_close(a, e, atol=1e-12, rtol=1e-12)


def test_first_step_uses_input_gate_as_stabiliser(scan):
    wx, R, b = inputs(S=1)
    _, (_, _, _, m) = scan(wx, R, b)
    torch.testing.assert_close(m, wx[:, 0, 0] + b[0])


def test_extreme_gates_and_long_sequences_stay_finite(scan):
    wx, R, b = inputs(B=1, S=8192, NH=1, DH=4, dtype=torch.float32, scale=50.0)
    wx.requires_grad_(True)
    h, state = scan(wx, R, b)
    F.mse_loss(h, torch.zeros_like(h)).backward()
    assert torch.isfinite(h).all() and all(torch.isfinite(s).all() for s in state)
    assert torch.isfinite(wx.grad).all()


def random_state(B=2, NH=2, DH=4):
    h, c, m = (torch.randn(B, NH, DH, dtype=torch.float64) for _ in range(3))
    n = torch.rand(B, NH, DH, dtype=torch.float64) + 0.5
    return h, c, n, m


def assert_scan_equals_steps(scan, wx, R, b, state, leaves):
    """Outputs, end state and the gradients of `leaves` equal autograd through the step loop."""
    for t in leaves:
        t.requires_grad_(True)
    fused, fused_end = scan(wx, R, b, state)
    ref, ref_end = slstm_scan_steps(wx, R, b, state)
    torch.testing.assert_close(fused, ref, atol=1e-12, rtol=1e-12)
    for a, e in zip(fused_end, ref_end):
        torch.testing.assert_close(a, e, atol=1e-12, rtol=1e-12)
    upstream = torch.randn_like(fused)
    grads = torch.autograd.grad((fused * upstream).sum() + fused_end[0].sum(), leaves)
    ref_grads = torch.autograd.grad((ref * upstream).sum() + ref_end[0].sum(), leaves)
    for a, e in zip(grads, ref_grads):
        torch.testing.assert_close(a, e, atol=1e-11, rtol=1e-10)


@pytest.mark.parametrize("with_state", [False, True])
def test_fused_backward_equals_autograd_through_steps(with_state, scan):
    wx, R, b = inputs(S=21)
    state = random_state() if with_state else None
    assert_scan_equals_steps(scan, wx, R, b, state,
                             [wx, R, b] + (list(state[:3]) if with_state else []))


def test_fused_scan_works_under_bf16_autocast(scan):
    wx, R, b = (t.float() for t in inputs(S=9))
    wx.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h, _ = scan(wx.bfloat16(), R, b)
    h.float().sum().backward()
    ref, _ = slstm_scan_steps(wx, R, b)
    assert torch.isfinite(wx.grad).all() and (h.float() - ref).abs().max() < 0.05


# (B, S, NH, DH): one step, one pair, odd and unblocked widths, a partial last group of steps
SHAPES = [(2, 19, 2, 4), (1, 1, 1, 1), (1, 9, 1, 5), (3, 17, 3, 3), (2, 8, 2, 16), (2, 11, 1, 33)]


@needs_fast_path(OP)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compiled_cpu_loops_equal_the_pytorch_loops(dtype, shape):
    B, S, NH, DH = shape
    wx, R, b = (t.to(dtype) for t in inputs(B=B, S=S, NH=NH, DH=DH))
    state = tuple(t.to(dtype) for t in random_state(B=B, NH=NH, DH=DH))
    leaves = [wx, R, b, *state[:3]]
    results = []
    for implementation in ("fused", "reference"):
        xs = [t.detach().clone().requires_grad_(True) for t in leaves]
        h, end = slstm_scan.implementation(implementation)(xs[0], xs[1], xs[2],
                                                            (*xs[3:], state[3]))
        upstream = torch.ones_like(h)
        grads = torch.autograd.grad((h * upstream).sum() + end[0].sum(), xs)
        results.append((h, end, grads))
    tol = dict(atol=1e-12, rtol=1e-11) if dtype == torch.float64 else dict(atol=1e-5, rtol=1e-5)
    (h1, e1, g1), (h2, e2, g2) = results
    torch.testing.assert_close(h1, h2, **tol)
    for a, c in zip((*e1, *g1), (*e2, *g2)):
        torch.testing.assert_close(a, c, **tol)


@needs_fast_path(OP)
def test_scan_runs_the_compiled_loops_on_cpu_tensors(monkeypatch):
    calls = count_calls(monkeypatch, OP)
    wx, R, b = inputs(S=3)
    slstm_scan(wx, R, b)
    assert len(calls) == 1


@pytest.mark.parametrize("shape", SHAPES)
def test_scan_gradients_equal_autograd_through_steps_across_shapes(shape, scan):
    B, S, NH, DH = shape
    wx, R, b = inputs(B=B, S=S, NH=NH, DH=DH)
    state = random_state(B=B, NH=NH, DH=DH)
    assert_scan_equals_steps(scan, wx, R, b, state, [wx, R, b, *state[:3]])


def test_scan_output_does_not_alias_the_end_state(scan):
    wx, R, b = inputs(S=5)
    h, (h_end, c, n, m) = scan(wx, R, b)
    h_end.zero_()
    assert h[:, -1].abs().sum() > 0


def test_empty_sequence_passes_the_state_through(scan):
    wx, R, b = inputs(S=0)
    state = random_state()
    h, end = scan(wx, R, b, state)
    assert h.shape == (2, 0, 2, 4)
    for a, e in zip(end, state):
        torch.testing.assert_close(a, e)


@needs_fast_path(OP)
@pytest.mark.skipif(not cpu_build.avx512_build_possible(), reason="no AVX-512 on this CPU")
@pytest.mark.parametrize("shape", [(2, 19, 2, 16), (2, 11, 1, 33)])
def test_avx512_build_equals_portable_build(shape, monkeypatch):
    """The 64-byte-vector build of the kernel against the 32-byte one, values and gradients."""
    assert "avx512" in SLSTM_SCAN.load().__name__
    portable = cpu_build.build_extension(SLSTM_SCAN.source, "test")
    B, S, NH, DH = shape
    wx, R, b = inputs(B=B, S=S, NH=NH, DH=DH)
    state = random_state(B=B, NH=NH, DH=DH)
    results = []
    for module in (SLSTM_SCAN.load(), portable):
        monkeypatch.setattr(SLSTM_SCAN, "load", lambda module=module: module)
        xs = [t.detach().clone().requires_grad_(True) for t in (wx, R, b, *state[:3])]
        h, end = slstm_scan.implementation("fused")(xs[0], xs[1], xs[2], (*xs[3:], state[3]))
        results.append([h, *end, *torch.autograd.grad(h.sum() + end[0].sum(), xs)])
    for a, c in zip(*results):
        torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-5)
