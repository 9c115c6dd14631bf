"""Shared test helpers: deterministic seeds, small random mLSTM/sLSTM inputs, a tiny checkpoint,
and a whole-model comparison of a fused kernel against the PyTorch operators it replaces."""

import pytest
import torch

from bioxlstm import XLSTMLanguageModel, preset


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Cached molecule statistics go to a folder of this test session, not the user's cache."""
    import os

    os.environ["BIOXLSTM_CACHE"] = str(tmp_path_factory.mktemp("cache"))


def mlstm_inputs(B=2, NH=2, S=29, DH=8, dtype=torch.float64, grad=False, gate_scale=1.0):
    """Random q, k, v and gate pre-activations for the mLSTM cell."""
    q, k, v = (torch.randn(B, NH, S, DH, dtype=dtype) for _ in range(3))
    i = torch.randn(B, NH, S, dtype=dtype) * gate_scale
    f = torch.randn(B, NH, S, dtype=dtype) * gate_scale + 2.0
    tensors = [q, k, v, i, f]
    if grad:
        for t in tensors:
            t.requires_grad_(True)
    return tensors


def random_mlstm_state(B=2, NH=2, DH=8, dtype=torch.float64):
    C = torch.randn(B, NH, DH, DH, dtype=dtype)
    n = torch.randn(B, NH, DH, dtype=dtype).abs()
    m = torch.randn(B, NH, dtype=dtype)
    return C, n, m


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A randomly initialised tiny-mlstm checkpoint directory (seed 0), one per test module."""
    path = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    XLSTMLanguageModel(preset("tiny-mlstm")).save_pretrained(path)
    return path


def fused_and_unfused_runs(monkeypatch, preset_name, kernel, supported):
    """A tiny float64 model's logits (two calls, the second from the first's state) and all
    parameter gradients, first with `blocks.<kernel>` (calls counted), then with
    `blocks.<supported>` answering False. Returns both runs and the number of kernel calls, which
    the second run must not add to."""
    from bioxlstm.layers import blocks

    torch.manual_seed(0)
    model = XLSTMLanguageModel(preset(preset_name)).double()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    ids = torch.randint(0, 12, (2, 21))
    calls = []
    fused = getattr(blocks, kernel)
    monkeypatch.setattr(blocks, kernel, lambda *a: calls.append(1) or fused(*a))
    runs, count = [], 0
    for use_kernel in (True, False):
        if not use_kernel:
            count = len(calls)
            monkeypatch.setattr(blocks, supported, lambda *t, **kw: False)
        model.zero_grad()
        first = model(ids[:, :13], return_state=True)
        more = model(ids[:, 13:], state=first.state).logits
        model.loss(ids).backward()
        runs.append([first.logits, more, *(p.grad.clone() for p in model.parameters())])
    assert len(calls) == count
    return runs, count
