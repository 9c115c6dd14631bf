"""The fused CPU mLSTM kernel equals the PyTorch chunkwise form: outputs, end state, all gradients."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import count_calls, mlstm_inputs, needs_fast_path, random_mlstm_state

from bioxlstm.config import preset
from bioxlstm.layers import backends, blocks, mlstm_cpu
from bioxlstm.layers.cpu_kernels import MLSTM_CELL
from bioxlstm.layers.fast_paths import forced
from bioxlstm.layers.mlstm import mlstm_chunkwise, mlstm_parallel

OP = "mLSTM chunkwise"
pytestmark = needs_fast_path(OP)

# (B, NH, S, DH, DV, chunk): tails, S = 1, S below one chunk, chunk 1, DV != DH
SHAPES = [
    (2, 3, 37, 8, 8, 8),
    (1, 1, 1, 4, 4, 64),
    (2, 2, 5, 6, 6, 64),
    (1, 2, 64, 16, 12, 16),
    (2, 1, 130, 8, 8, 64),
    (1, 2, 9, 4, 4, 1),
    (3, 1, 70, 8, 5, 32),
]


def _inputs(B, NH, S, DH, DV, dtype, with_state, gate_scale=1.0, seed=0):
    torch.manual_seed(seed)
    q, k, v, i, f = mlstm_inputs(B, NH, S, DH, dtype=dtype, gate_scale=gate_scale)
    v = torch.randn(B, NH, S, DV, dtype=dtype)
    tensors = [q, k, v, i, f]
    if with_state:
        _, n, m = random_mlstm_state(B, NH, DH, dtype=dtype)
        tensors += [torch.randn(B, NH, DH, DV, dtype=dtype), n, m]
    return [t.requires_grad_(True) for t in tensors]


def _run(fn, tensors):
    """Outputs, end state and the gradients of a random linear loss of all four."""
    q, k, v, i, f, *state = tensors
    h, (C, n, m) = fn(q, k, v, i, f, tuple(state) or None)
    gen = torch.Generator().manual_seed(1)
    outs = (h, C, n, m)
    loss = sum((o * torch.randn(o.shape, dtype=o.dtype, generator=gen)).sum() for o in outs)
    return [*outs, *torch.autograd.grad(loss, tensors)]


def _fused(L):
    return lambda q, k, v, i, f, s: mlstm_cpu.mlstm_chunkwise_fused(q, k, v, i, f, s, chunk_size=L)


def _reference(L):
    return lambda q, k, v, i, f, s: mlstm_chunkwise(q, k, v, i, f, s, return_state=True,
                                                    chunk_size=L)


def _assert_all_close(got, want, rtol, atol):
    names = ["h", "C", "n", "m", "dq", "dk", "dv", "di", "df", "dC0", "dn0", "dm0"]
    for name, a, b in zip(names, got, want):
        scale = b.abs().max().clamp_min(1.0)
        err = (a - b).abs().max()
        assert err <= atol + rtol * scale, f"{name}: max error {err:.3e} (scale {scale:.3e})"


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_float64_matches_reference(shape, with_state):
    *dims, L = shape
    for gate_scale in (1.0, 6.0):
        tensors = _inputs(*dims, torch.float64, with_state, gate_scale)
        _assert_all_close(_run(_fused(L), tensors), _run(_reference(L), tensors), 1e-10, 1e-10)


@pytest.mark.parametrize("with_state", [False, True])
def test_single_chunk_matches_parallel(with_state):
    tensors = _inputs(2, 2, 23, 8, 8, torch.float64, with_state)
    parallel = lambda q, k, v, i, f, s: mlstm_parallel(q, k, v, i, f, s, return_state=True)  # noqa: E731
    _assert_all_close(_run(_fused(64), tensors), _run(parallel, tensors), 1e-10, 1e-10)


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 37, 8, 8, 8), (2, 2, 200, 32, 32, 64)])
def test_float32_as_accurate_as_reference(shape, with_state):
    """Against float64, the fused float32 results are about as close as the torch form's."""
    *dims, L = shape
    tensors = _inputs(*dims, torch.float32, with_state)
    wide = [t.detach().double().requires_grad_(True) for t in tensors]
    exact = _run(_reference(L), wide)
    fused = _run(_fused(L), tensors)
    torch32 = _run(_reference(L), tensors)
    for a, b, want in zip(fused, torch32, exact):
        scale = want.abs().max().clamp_min(1.0)
        err_fused = (a.double() - want).abs().max() / scale
        err_torch = (b.double() - want).abs().max() / scale
        assert err_fused <= 4 * err_torch + 1e-5


def test_layer_layout_and_upstream_gradient():
    """q, k, v as head views of (B, S, NH * DH) activations, h consumed as (B, S, NH, DH)."""
    torch.manual_seed(0)
    B, S, NH, DH = 2, 45, 2, 8
    x = torch.randn(B, S, 3 * NH * DH, dtype=torch.float64, requires_grad=True)
    gates = torch.randn(B, S, 2 * NH, dtype=torch.float64, requires_grad=True)
    results = []
    for fn in (_fused(16), _reference(16)):
        q, k, v = (t.view(B, S, NH, DH).transpose(1, 2) for t in x.split(NH * DH, -1))
        i, f = gates.transpose(1, 2).split(NH, dim=1)
        h, _ = fn(q, k, v, i, f + 2, None)
        y = h.transpose(1, 2).reshape(B, S, -1)
        loss = (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum()
        results.append([y, *torch.autograd.grad(loss, [x, gates])])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_gradcheck():
    tensors = _inputs(1, 2, 7, 3, 2, torch.float64, True)

    def fn(*ts):
        q, k, v, i, f, C, n, m = ts
        h, state = mlstm_cpu.mlstm_chunkwise_fused(q, k, v, i, f, (C, n, m), chunk_size=3)
        return h, *state

    assert torch.autograd.gradcheck(fn, tensors)


def test_chunkwise_kernel_uses_fused_path_on_cpu(monkeypatch):
    calls = count_calls(monkeypatch, OP)
    q, k, v, i, f = mlstm_inputs(dtype=torch.float32)
    backends.mlstm_kernel("chunkwise")(q, k, v, i, f, None, 8)
    assert calls
    calls.clear()
    backends.mlstm_kernel("chunkwise")(q.half(), k.half(), v.half(), i, f, None, 8)
    assert not calls


def test_mlstm_layer_same_with_and_without_kernels():
    torch.manual_seed(0)
    config = preset("tiny-mlstm")
    layer = blocks.MLSTMLayer(config, 0).double()
    x = torch.randn(4, 260, config.d_model, dtype=torch.float64, requires_grad=True)
    results = []
    for implementation in ("fused", "reference"):
        with forced(implementation, OP, "mLSTM output gate", "mLSTM input side"):
            y, (_, (C, n, m)) = layer(x)
        loss = (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum() + C.sum()
        results.append([y, C, n, m, *torch.autograd.grad(loss, [x, *layer.parameters()])])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_bad_state_shape_raises():
    q, k, v, i, f = mlstm_inputs()
    C, n, m = random_mlstm_state(NH=3)
    with pytest.raises(ValueError, match="state"):
        mlstm_cpu.mlstm_chunkwise_fused(q, k, v, i, f, (C, n, m))


def test_disabled_by_environment():
    code = ("from bioxlstm.layers.backends import mlstm_kernel; "
            "from bioxlstm.layers.cpu_kernels import MLSTM_CELL; import torch; "
            "q, g = torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2); calls = []; "
            "fused = mlstm_kernel('chunkwise').accelerated['fused']; run = fused.run; "
            "fused.run = lambda *a: calls.append(1) or run(*a); "
            "mlstm_kernel('chunkwise')(q, q, q, g, g, None, 8); "
            "print(MLSTM_CELL.load() is None, bool(calls))")
    env = {**os.environ, "BIOXLSTM_NO_EXTENSIONS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["True", "False"]


def test_no_grad_forward_keeps_no_chunk_scores_or_states_and_agrees():
    """Without autograd the kernel keeps one score buffer and only the end state per (batch, head)."""
    q, k, v, i, f = mlstm_inputs(S=150, grad=True)
    state = random_mlstm_state()
    h, end = mlstm_cpu.mlstm_chunkwise_fused(q, k, v, i, f, state, chunk_size=32)
    with torch.no_grad():
        h_ng, end_ng = mlstm_cpu.mlstm_chunkwise_fused(q, k, v, i, f, state, chunk_size=32)
    torch.testing.assert_close(h_ng, h.detach(), rtol=0, atol=0)
    for a, b in zip(end_ng, end):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=0)
    # the kernel's own arrays: (B, NH, chunks, L, L) scores and (B, NH, states, DH, DV) states
    C0, n0, m0 = state
    args = [t.detach().contiguous() for t in (q, k, v, i, f, C0, n0, m0)]
    _, Cs, _, _, _, _, Ss = MLSTM_CELL.load().forward(*args, 32, 1e-6, False)
    assert Cs.shape[2] == Ss.shape[2] == 1
    _, Cs, _, _, _, _, Ss = MLSTM_CELL.load().forward(*args, 32, 1e-6, True)
    assert (Cs.shape[2], Ss.shape[2]) == (6, 5)  # 150 tokens: 5 chunks of 32
