"""GPU checks, marker `gpu`: `pytest -m gpu`, run by benchmarks/gpu_check.sh on a GPU machine.

Covered: mlstm_kernels' Triton kernel behind bioxlstm's adapter, as the mLSTM layer calls it,
against the PyTorch reference in float64 (output, end state and every gradient, the incoming
state's too; float32, bfloat16 and under autocast); a bf16-autocast training step of each preset
family against float32 and float64 on the same GPU; generation from a state against the full
forward; the Trainer on CUDA with bf16, resume, and `compile: true`; the Transformer baseline on
FlashAttention.

Without CUDA every test skips. BIOXLSTM_REQUIRE_GPU=1 (set by gpu_check.sh) turns a missing GPU or
mlstm_kernels into failures instead. BIOXLSTM_GPU_TESTS_ON=cpu runs the same tests on the CPU, the
Triton-only assertions skipped: gpu_check.sh --dry-run does, so the tests' own code has run before
a GPU is lent.
"""

from __future__ import annotations

import importlib
import json
import os

import pytest
import torch

from bioxlstm import XLSTMLanguageModel, preset
from bioxlstm.baselines import TransformerLanguageModel, transformer_like
from bioxlstm.layers.backends import mlstm_kernel
from bioxlstm.layers.mlstm import mlstm_chunkwise
from bioxlstm.layers.mlstm_triton import TRITON_KERNEL, package_kernel, triton_available
from bioxlstm.train import TrainConfig, train_on_tokens

DEVICE = os.environ.get("BIOXLSTM_GPU_TESTS_ON", "cuda")
ON_CUDA = DEVICE == "cuda"
REQUIRE = os.environ.get("BIOXLSTM_REQUIRE_GPU") == "1"
# the module inside mlstm_kernels (2.0.6) whose forward function every Triton chunkwise call runs
TRITON_FWBW = "mlstm_kernels.torch.chunkwise.triton_xl_chunk.fwbw"

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available() and not REQUIRE,
                       reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs these)"),
]


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want||, in float64 (METHOD: float32 far under 1e-3, tf32 near 3e-4,
    bfloat16 1e-3 to 1e-2)."""
    got, want = got.detach().double(), want.detach().double()
    assert torch.isfinite(got).all(), "non-finite values"
    floor = 1e-8 * want.numel() ** 0.5  # so that a gradient of zeros compares absolutely
    return ((got - want).norm() / (want.norm() + floor)).item()


def triton_calls(monkeypatch) -> list | None:
    """A list that grows by one per forward call of mlstm_kernels' Triton chunkwise kernel, on CUDA;
    None in a CPU dry run, where there is nothing to count."""
    if not ON_CUDA:
        return None
    fwbw = importlib.import_module(TRITON_FWBW)
    calls, forward = [], fwbw.mlstm_chunkwise_fw
    monkeypatch.setattr(fwbw, "mlstm_chunkwise_fw",
                        lambda *a, **kw: calls.append(kw.get("matQ", a[0] if a else None)) or
                        forward(*a, **kw))
    return calls


def test_cuda_and_the_triton_backend_are_available():
    if not ON_CUDA:
        pytest.skip("CPU dry run")
    assert torch.cuda.is_available(), "no CUDA GPU"
    assert package_kernel(TRITON_KERNEL) is not None, (
        "mlstm_kernels' Triton kernel does not import (pip install 'bioxlstm[gpu]')")
    assert triton_available()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")


def cell_inputs(S: int, dtype: torch.dtype, with_state: bool, B: int = 2, NH: int = 2,
                DH: int = 64) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """q, k, v in the layer's (B, S, NH, DH) memory layout, trained-like gates, and an incoming
    state (or none), all leaves on DEVICE; drawn fresh per shape."""
    g = torch.Generator().manual_seed(1000 * S + DH + with_state)
    q, k, v = (torch.randn(B, S, NH, DH, generator=g).transpose(1, 2) for _ in range(3))
    i = torch.randn(B, NH, S, generator=g)
    f = torch.randn(B, NH, S, generator=g) + 3
    state = []
    if with_state:
        state = [torch.randn(B, NH, DH, DH, generator=g) * 0.1, torch.rand(B, NH, DH, generator=g),
                 torch.randn(B, NH, generator=g)]
    to = lambda t: t.to(DEVICE, dtype).requires_grad_()  # noqa: E731
    return [to(t) for t in (q, k, v, i, f)], [to(t) for t in state]


def run_cell(kernel, tensors: list[torch.Tensor], state: list[torch.Tensor]) -> list[torch.Tensor]:
    """h, the end state (C, n, m), and the gradients of a random weighting of all four with
    respect to every input and the incoming state."""
    h, end = kernel(*tensors, tuple(state) if state else None, 64)
    outs = [h, *end]
    g = torch.Generator().manual_seed(7)
    weights = [torch.randn(o.shape, generator=g).to(o.device, torch.float64) for o in outs]
    loss = sum((o.double() * w).sum() for o, w in zip(outs, weights))
    return outs + list(torch.autograd.grad(loss, [*tensors, *state]))


def reference_cell(q, k, v, i, f, state, chunk_size):
    return mlstm_chunkwise(q, k, v, i, f, state, return_state=True, chunk_size=chunk_size)


def check_cell(dtype: torch.dtype, S: int, with_state: bool, tol: float, autocast: bool = False,
               calls: list | None = None) -> None:
    tensors, state = cell_inputs(S, dtype, with_state)
    with torch.autocast("cuda" if ON_CUDA else "cpu", torch.bfloat16, enabled=autocast):
        got = run_cell(mlstm_kernel("chunkwise"), tensors, state)
    up = [t.detach().double().requires_grad_() for t in (*tensors, *state)]
    want = run_cell(reference_cell, up[:5], up[5:])
    names = ["h", "C", "n", "m", "dq", "dk", "dv", "di", "df", "dC0", "dn0", "dm0"]
    errors = {name: rel_err(a, b) for name, a, b in zip(names, got, want)}
    assert max(errors.values()) < tol, errors
    if calls is not None:
        assert calls, "the chunkwise dispatcher did not run mlstm_kernels' Triton kernel on CUDA"


@pytest.mark.parametrize("S", [256, 200])  # whole 64-token chunks, and a tail through the reference
@pytest.mark.parametrize("with_state", [False, True])
def test_triton_cell_matches_the_reference_in_float32(monkeypatch, S, with_state):
    # float32 Triton dots may run as tf32: about 3e-4 relative, bounded here by 5e-3
    check_cell(torch.float32, S, with_state, 5e-3, calls=triton_calls(monkeypatch))


@pytest.mark.parametrize("autocast", [False, True])
def test_triton_cell_in_bfloat16_and_under_autocast(monkeypatch, autocast):
    if not ON_CUDA:
        pytest.skip("the fused CPU kernel takes float32; the CPU form in bfloat16 is not a target")
    # bfloat16 inputs (as autocast's projections give the cell) against float64 on the same values;
    # in bfloat16 arithmetic the gate gradients, sums over the sequence, carry the largest error:
    # 0.1 bounds them loosely (a wrong scale or state convention is off by far more)
    check_cell(torch.bfloat16, 256, True, 1e-1, autocast=autocast, calls=triton_calls(monkeypatch))


# one preset of each family: DNA mLSTM, DNA sLSTM, protein (RoPE), SMILES, and a sequence length
FAMILIES = [("dna-xlstm-4m", 256), ("dna-xlstm-500k", 256), ("prot-xlstm-26m", 256),
            ("chem-xlstm-15m", 100)]


def loss_and_grads(model: XLSTMLanguageModel, ids: torch.Tensor, bf16: bool = False
                   ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    with torch.autocast(ids.device.type, torch.bfloat16, enabled=bf16):
        loss = model.loss(ids)
    loss.backward()
    return loss.detach(), [p.grad.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name,S", FAMILIES)
def test_bf16_training_step_of_each_preset_family(monkeypatch, name, S):
    calls = triton_calls(monkeypatch)
    torch.manual_seed(0)
    model = XLSTMLanguageModel(preset(name)).to(DEVICE).eval()  # eval: no dropout to compare
    ids = torch.randint(0, model.config.vocab_size, (2, S), device=DEVICE)
    loss32, grads32 = loss_and_grads(model, ids)
    if calls is not None and not preset(name).slstm_at:
        assert calls, f"{name}: the mLSTM did not run on the Triton kernel"
    loss16, grads16 = loss_and_grads(model, ids, bf16=True)
    reference = XLSTMLanguageModel(preset(name)).to(DEVICE, torch.float64).eval()
    reference.load_state_dict(model.state_dict())
    loss64, grads64 = loss_and_grads(reference, ids)
    assert abs(loss32.item() - loss64.item()) < 1e-3 * loss64.item()
    assert abs(loss16.item() - loss64.item()) < 2e-2 * loss64.item()
    flat = lambda grads: torch.cat([g.double().flatten() for g in grads])  # noqa: E731
    assert rel_err(flat(grads32), flat(grads64)) < 1e-2
    assert rel_err(flat(grads16), flat(grads64)) < 1e-1
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    optimizer.step()  # the gradients of the bf16 step are still in .grad
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with torch.no_grad(), torch.autocast(ids.device.type, torch.bfloat16):
        assert torch.isfinite(model.loss(ids))


@pytest.mark.parametrize("name", ["dna-xlstm-4m", "tiny-mixed", "tiny-prot-xlstm"])
def test_generation_from_a_state_matches_the_full_forward(name):
    torch.manual_seed(0)
    model = XLSTMLanguageModel(preset(name)).to(DEVICE).eval()
    V = model.config.vocab_size
    ids = torch.randint(0, V, (2, 144), device=DEVICE)
    with torch.no_grad():
        full = model(ids).logits
        out = model(ids[:, :128], return_state=True)
        state, stepped = out.state, [out.logits[:, -1]]
        for t in range(128, 143):
            stepped.append(model.step(ids[:, t], state))
        assert rel_err(torch.stack(stepped, 1), full[:, 127:143]) < 2e-3
        tokens = model.generate(ids[:, :16], 8, top_k=1)
    assert tokens.shape == (2, 24) and tokens.device.type == DEVICE.split(":")[0]
    assert torch.equal(tokens[:, :16], ids[:, :16]) and int(tokens.max()) < V


def train_tiny(run_dir, bf16: bool, compile: bool, max_steps: int, resume: bool = False):
    torch.manual_seed(0)
    model = XLSTMLanguageModel(preset("tiny-mlstm"))
    stream = torch.randint(0, 12, (8_000,), generator=torch.Generator().manual_seed(1))
    config = TrainConfig(lr=3e-3, max_steps=max_steps, batch_size=2, log_every=1, progress=False,
                         save_every_minutes=0, device=DEVICE, bf16=bf16, compile=compile)
    trainer = train_on_tokens(model, config, stream, 128, run_dir, resume=resume)
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").open()]
    return trainer, losses


def test_trainer_on_cuda_with_bf16_saves_and_resumes(tmp_path):
    trainer, losses = train_tiny(tmp_path / "run", bf16=True, compile=False, max_steps=2)
    assert str(trainer.device).startswith(DEVICE) and all(map(torch.isfinite, torch.tensor(losses)))
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["device"].startswith(DEVICE)
    trainer, losses = train_tiny(tmp_path / "run", bf16=True, compile=False, max_steps=3,
                                 resume=True)
    assert trainer.step == 3 and len(losses) == 3


def test_transformer_baseline_runs_on_flash_attention():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for name in ("dna-xlstm-4m", "prot-xlstm-102m"):  # head dims 68 and 208 (padded to 8 by torch)
        params = sum(p.numel() for p in XLSTMLanguageModel(preset(name)).parameters())
        config = transformer_like(params, preset(name).vocab_size, 4096)
        model = TransformerLanguageModel(config).to(DEVICE)
        ids = torch.randint(0, config.vocab_size, (1, 512), device=DEVICE)
        kind = DEVICE.split(":")[0]
        with torch.autocast(kind, torch.bfloat16):
            want = model(ids).logits
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # raises where FlashAttention cannot run
                got = model(ids).logits
                got.float().square().mean().backward()
        assert rel_err(got, want) < 1e-2, name
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_compiled_training_matches_eager_on_the_gpu(tmp_path):
    """Last in the file: torch.compile of the whole loss, the Triton kernel inside, takes longest."""
    torch._dynamo.reset()
    _, eager = train_tiny(tmp_path / "eager", bf16=False, compile=False, max_steps=3)
    _, compiled = train_tiny(tmp_path / "compiled", bf16=False, compile=True, max_steps=3)
    for got, want in zip(compiled, eager):
        assert got == pytest.approx(want, rel=1e-3)
