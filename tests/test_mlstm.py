"""The mLSTM cell: parallel == chunkwise == recurrent, against a naive reference, with state."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import mlstm_inputs, random_mlstm_state

from bioxlstm.layers.mlstm import mlstm_chunkwise, mlstm_parallel, mlstm_recurrent

FORMS = {
    "parallel": lambda *a, **kw: mlstm_parallel(*a, **kw),
    "recurrent": lambda *a, **kw: mlstm_recurrent(*a, **kw),
    "chunk1": lambda *a, **kw: mlstm_chunkwise(*a, chunk_size=1, **kw),
    "chunk7": lambda *a, **kw: mlstm_chunkwise(*a, chunk_size=7, **kw),
    "chunk16": lambda *a, **kw: mlstm_chunkwise(*a, chunk_size=16, **kw),
    "chunk64": lambda *a, **kw: mlstm_chunkwise(*a, chunk_size=64, **kw),
}


def naive_mlstm(q, k, v, i, f, eps=1e-6):
    """docs/model.md section 1 written literally, without the stabiliser, one step at a time."""
    B, NH, S, DH = q.shape
    C = torch.zeros(B, NH, DH, DH, dtype=q.dtype)
    n = torch.zeros(B, NH, DH, dtype=q.dtype)
    m = torch.zeros(B, NH, dtype=q.dtype)
    logF = torch.zeros(B, NH, dtype=q.dtype)
    hs = []
    for t in range(S):
        lf = F.logsigmoid(f[:, :, t])
        m = torch.maximum(lf + m, i[:, :, t])
        logF = logF + lf
        kt = k[:, :, t] / math.sqrt(DH)
        # unstabilised memories: C~ = sum_j exp(F_t - F_j + i_j) k_j v_j^T
        C = torch.exp(lf)[..., None, None] * C + torch.exp(i[:, :, t])[..., None, None] * (
            kt.unsqueeze(-1) * v[:, :, t].unsqueeze(-2))
        n = torch.exp(lf).unsqueeze(-1) * n + torch.exp(i[:, :, t]).unsqueeze(-1) * kt
        num = (q[:, :, t].unsqueeze(-2) @ C).squeeze(-2)
        qn = (q[:, :, t] * n).sum(-1, keepdim=True)
        hs.append(num / (torch.maximum(qn.abs(), torch.ones_like(qn)) + eps * torch.exp(m)[..., None]))
    return torch.stack(hs, 2)


def test_forms_match_naive_reference():
    q, k, v, i, f = mlstm_inputs(S=21)
    ref = naive_mlstm(q, k, v, i, f)
    for name, form in FORMS.items():
        torch.testing.assert_close(form(q, k, v, i, f), ref, atol=1e-10, rtol=1e-8, msg=name)


@pytest.mark.parametrize("S", [1, 16, 37, 100])
def test_forms_agree_float64_outputs_and_gradients(S):
    inputs = mlstm_inputs(S=S, grad=True)
    ref_h, ref_state = mlstm_parallel(*inputs, return_state=True)
    upstream = torch.randn_like(ref_h)
    ref_grads = torch.autograd.grad((ref_h * upstream).sum() + ref_state[0].sum(), inputs)
    for name, form in FORMS.items():
        h, state = form(*inputs, return_state=True)
        torch.testing.assert_close(h, ref_h, atol=1e-8, rtol=1e-8, msg=name)
        for a, b in zip(state, ref_state):
            torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-8, msg=name)
        grads = torch.autograd.grad((h * upstream).sum() + state[0].sum(), inputs)
        for a, b in zip(grads, ref_grads):
            torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-7, msg=name)


def test_forms_agree_float32():
    inputs64 = mlstm_inputs(S=130)
    ref = mlstm_parallel(*inputs64)
    inputs32 = [t.float() for t in inputs64]
    for name, form in FORMS.items():
        torch.testing.assert_close(form(*inputs32).double(), ref, atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.parametrize("name", sorted(FORMS))
def test_state_in_and_split_equals_one_call(name):
    form = FORMS[name]
    q, k, v, i, f = mlstm_inputs(S=40)
    state0 = random_mlstm_state()
    full, end = form(q, k, v, i, f, state0, return_state=True)
    cut = 17
    first, mid = form(q[:, :, :cut], k[:, :, :cut], v[:, :, :cut], i[:, :, :cut], f[:, :, :cut],
                      state0, return_state=True)
    second, end2 = form(q[:, :, cut:], k[:, :, cut:], v[:, :, cut:], i[:, :, cut:], f[:, :, cut:],
                        mid, return_state=True)
    torch.testing.assert_close(torch.cat([first, second], 2), full, atol=1e-9, rtol=1e-8)
    for a, b in zip(end, end2):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-8)


def test_initial_state_changes_output():
    q, k, v, i, f = mlstm_inputs(S=5)
    with_state = mlstm_chunkwise(q, k, v, i, f, random_mlstm_state(), chunk_size=2)
    assert not torch.allclose(with_state, mlstm_chunkwise(q, k, v, i, f, chunk_size=2))


def test_extreme_gates_stay_finite_and_agree():
    q, k, v, i, f = mlstm_inputs(S=64, dtype=torch.float32)
    i = torch.where(torch.rand_like(i) < 0.5, 50.0, -50.0)
    f = torch.where(torch.rand_like(f) < 0.5, 50.0, -50.0)
    outs = {name: form(q, k, v, i, f) for name, form in FORMS.items()}
    for name, h in outs.items():
        assert torch.isfinite(h).all(), name
        torch.testing.assert_close(h, outs["recurrent"], atol=1e-4, rtol=1e-4, msg=name)


def test_long_sequence_finite_with_gradients():
    q, k, v, i, f = mlstm_inputs(B=1, NH=1, S=8192, DH=8, dtype=torch.float32, grad=True)
    h = mlstm_chunkwise(q, k, v, i, f, chunk_size=64)
    h.square().mean().backward()
    assert torch.isfinite(h).all()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v, i, f))


def test_parallel_form_keeps_float32_accuracy_at_long_length():
    inputs = mlstm_inputs(B=1, NH=1, S=2048, DH=8)
    ref = mlstm_chunkwise(*inputs, chunk_size=64)
    got = mlstm_parallel(*[t.float() for t in inputs])
    assert (got.double() - ref).abs().max() < 1e-3


def test_empty_sequence():
    q, k, v, i, f = mlstm_inputs(S=0)
    for form in FORMS.values():
        assert form(q, k, v, i, f).shape == (2, 2, 0, 8)


def test_long_sequence_chunkwise_matches_float64():
    inputs = mlstm_inputs(B=1, NH=1, S=4096, DH=8)
    ref = mlstm_chunkwise(*inputs, chunk_size=64)
    got = mlstm_chunkwise(*[t.float() for t in inputs], chunk_size=64)
    assert (got.double() - ref).abs().max() < 1e-3


def test_bad_shapes_are_refused():
    q, k, v, i, f = mlstm_inputs()
    with pytest.raises(ValueError, match="gates"):
        mlstm_parallel(q, k, v, i[:, :, :-1], f)
    with pytest.raises(ValueError, match="q, k, v"):
        mlstm_chunkwise(q, k[:, :1], v, i, f)
    with pytest.raises(ValueError, match="chunk_size"):
        mlstm_chunkwise(q, k, v, i, f, chunk_size=0)
