"""bfloat16 on CPU: the mLSTM layer widens to float32 between its projections, runs the fused
float32 kernels there, and stays close to a float32 model."""

import pytest
import torch
from conftest import count_calls, needs_fast_path

from bioxlstm import XLSTMLanguageModel, preset
from bioxlstm.layers.blocks import mixer_dtype
from bioxlstm.layers.dense import split_linear

MLSTM_FAST_PATHS = ("mLSTM input side", "mLSTM chunkwise", "mLSTM output gate")


def perturbed_model(name: str) -> XLSTMLanguageModel:
    """A preset model with every parameter perturbed, so zero-initialised gates do real work."""
    torch.manual_seed(0)
    model = XLSTMLanguageModel(preset(name))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).norm() / want.float().norm()).item()


@pytest.mark.parametrize("dtype, device, widened", [
    (torch.bfloat16, "cpu", torch.float32), (torch.float16, "cpu", torch.float32),
    (torch.float32, "cpu", torch.float32), (torch.float64, "cpu", torch.float64),
    (torch.bfloat16, "meta", torch.bfloat16)])
def test_mixer_dtype_widens_half_precision_on_cpu_only(dtype, device, widened):
    assert mixer_dtype(torch.empty(2, dtype=dtype, device=device)) == widened


def test_split_linear_under_autocast_matches_linear():
    """Both halves as autocast's F.linear computes them; gradients reach float32 leaves."""
    torch.manual_seed(0)
    x = torch.randn(3, 40, 32, requires_grad=True)
    W = torch.randn(64, 32, requires_grad=True)
    results = []
    for fn in (split_linear, lambda x, W: torch.nn.functional.linear(x, W).chunk(2, dim=-1)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a, b = fn(x, W)
        assert a.dtype == b.dtype == torch.bfloat16
        loss = (a.float() ** 2).sum() + b.float().sum()
        results.append([a, b, *torch.autograd.grad(loss, [x, W])])
    for got, want in zip(*results):
        assert got.dtype == want.dtype
        assert relative_error(got, want) < 1e-2


@needs_fast_path(MLSTM_FAST_PATHS[0])
@needs_fast_path(MLSTM_FAST_PATHS[1])
@needs_fast_path(MLSTM_FAST_PATHS[2])
def test_bf16_autocast_runs_the_fused_float32_kernels(monkeypatch):
    """Every mLSTM block's input, cell and output-gate kernels run, on float32 tensors."""
    seen = {op: count_calls(monkeypatch, op) for op in MLSTM_FAST_PATHS}
    model = perturbed_model("tiny-mixed")
    mlstm_blocks = sum(block.kind == "mlstm" for block in model.stack.blocks)
    ids = torch.randint(0, model.config.vocab_size, (2, 70))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.loss(ids)
    loss.backward()
    for firsts in seen.values():
        assert [first.dtype for first in firsts] == [torch.float32] * mlstm_blocks
    assert all(p.grad.dtype == torch.float32 for p in model.parameters() if p.grad is not None)


def test_bf16_autocast_loss_and_gradients_follow_float32():
    model = perturbed_model("tiny-mixed")
    ids = torch.randint(0, model.config.vocab_size, (2, 70))
    runs = []
    for enabled in (True, False):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            loss = model.loss(ids)
        loss.backward()
        runs.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (loss_amp, grads_amp), (loss_fp32, grads_fp32) = runs
    assert abs(loss_amp.item() - loss_fp32.item()) < 1e-2 * loss_fp32.item()
    flat_amp, flat_fp32 = torch.cat([g.flatten() for g in grads_amp]), torch.cat(
        [g.flatten() for g in grads_fp32])
    assert relative_error(flat_amp, flat_fp32) < 5e-2


def test_bfloat16_weights_follow_float32_weights():
    """A model cast to bfloat16 gives bfloat16 logits close to the float32 model's."""
    model = perturbed_model("tiny-mixed").eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 70))
    with torch.no_grad():
        want = model(ids).logits
        got = model.to(torch.bfloat16)(ids).logits
    assert got.dtype == torch.bfloat16
    assert relative_error(got, want) < 3e-2
