"""Shared test helpers: deterministic seeds, small random mLSTM/sLSTM inputs, a tiny checkpoint."""

import pytest
import torch

from bioxlstm import XLSTMLanguageModel, preset


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


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
