"""The fused CPU generation step agrees with the generic forward, and is used where it applies."""

import subprocess
import sys

import pytest
import torch
from conftest import count_calls, needs_fast_path

from bioxlstm import XLSTMLanguageModel, preset
from bioxlstm.layers.cpu_kernels import GENERATION_STEP
from bioxlstm.layers.fast_paths import forced

OP = "generation step"
needs_kernel = needs_fast_path(OP)
SHAPES = ["tiny-mlstm", "tiny-slstm", "tiny-mixed", "tiny-prot-xlstm", "dna-xlstm-500k",
          "dna-xlstm-4m"]
TOL = {torch.float32: dict(rtol=1e-4, atol=2e-5), torch.float64: dict(rtol=1e-9, atol=1e-11)}


def model_of(name, dtype=torch.float32, **overrides):
    """A preset model with every parameter perturbed, so zero-initialised gates do real work."""
    torch.manual_seed(0)
    model = XLSTMLanguageModel(preset(name, **overrides)).to(dtype).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture
def generic():
    """Run a callable with the fused path switched off."""
    def run(fn, *args, **kwargs):
        with forced("reference", OP):
            return fn(*args, **kwargs)
    return run


def leaves(state):
    return torch.utils._pytree.tree_leaves(state.blocks)


def assert_states_close(a, b, dtype):
    assert a.position == b.position
    for x, y in zip(leaves(a), leaves(b), strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        torch.testing.assert_close(x, y, **TOL[dtype])


@needs_kernel
@pytest.mark.parametrize("name", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 3])
def test_steps_match_the_generic_forward(name, dtype, batch, generic):
    model = model_of(name, dtype)
    ids = torch.randint(0, model.config.vocab_size, (batch, 14))
    with torch.no_grad():
        fused = generic(model, ids[:, :6], return_state=True)
        ref = fused
        for t in range(6, 14):
            fused = model(ids[:, t:t + 1], state=fused.state, return_state=True)
            ref = generic(model, ids[:, t:t + 1], state=ref.state, return_state=True)
            torch.testing.assert_close(fused.logits, ref.logits, **TOL[dtype])
            torch.testing.assert_close(fused.hidden, ref.hidden, **TOL[dtype])
    assert_states_close(fused.state, ref.state, dtype)


@needs_kernel
def test_forward_uses_the_kernel_only_where_it_applies(monkeypatch):
    model = model_of("tiny-mixed")
    calls = count_calls(monkeypatch, OP)
    ids = torch.randint(0, 12, (2, 5))
    state = model(ids, return_state=True).state
    with torch.no_grad():
        model(ids[:, :1], state=state)  # one token with a state, no grad: fused
        model(ids[:, :2], state=state)  # two tokens: generic
        model(ids[:, :1])  # no state: generic
    assert len(calls) == 1
    out = model(ids[:, :1], state=state)  # grad enabled: generic, and differentiable
    assert len(calls) == 1 and out.logits.requires_grad


@needs_kernel
def test_forward_leaves_the_given_state_untouched():
    model = model_of("tiny-mixed")
    ids = torch.randint(0, 12, (2, 5))
    with torch.no_grad():
        state = model(ids, return_state=True).state
        before = [t.clone() for t in leaves(state)]
        first = model(ids[:, :1], state=state, return_state=True)
        again = model(ids[:, :1], state=state, return_state=True)
    for x, y in zip(leaves(state), before, strict=True):
        assert torch.equal(x, y)
    assert torch.equal(first.logits, again.logits)


@pytest.mark.parametrize("name", ["tiny-mixed", "tiny-prot-xlstm"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_step_advances_the_state_in_place(name, dtype, generic):
    model = model_of(name, dtype)
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    with torch.no_grad():
        state = model(ids[:, :4], return_state=True).state
        ref = generic(model, ids[:, :4], return_state=True)
        for t in range(4, 12):
            logits = model.step(ids[:, t], state)
            ref = generic(model, ids[:, t:t + 1], state=ref.state, return_state=True)
            torch.testing.assert_close(logits, ref.logits[:, -1], **TOL[dtype])
            if t == 4:  # the sequence forms leave some state non-contiguous: copied once
                tensors = leaves(state)
    assert_states_close(state, ref.state, dtype)
    if GENERATION_STEP.available():
        assert all(a is b for a, b in zip(leaves(state), tensors, strict=True))


@pytest.mark.parametrize("name", ["tiny-mixed", "tiny-prot-xlstm", "dna-xlstm-500k"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_generate_draws_the_same_tokens_as_the_generic_path(name, dtype, generic):
    model = model_of(name, dtype)
    prompt = torch.randint(0, model.config.vocab_size, (3, 5))

    def draw():
        return model.generate(prompt, 24, top_k=6, top_p=0.95, stop_token=3,
                              generator=torch.Generator().manual_seed(7))

    assert torch.equal(draw(), generic(draw))


def test_without_the_kernel_everything_runs_generic(monkeypatch, generic):
    monkeypatch.setattr(GENERATION_STEP, "available", lambda: False)
    model = model_of("tiny-mixed")
    prompt = torch.randint(0, 12, (2, 4))
    gen = model.generate(prompt, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(gen, generic(model.generate, prompt, 6,
                                    generator=torch.Generator().manual_seed(0)))


def test_other_dtypes_fall_back_to_the_generic_forward(generic):
    model = model_of("tiny-mixed").to(torch.bfloat16)
    ids = torch.randint(0, 12, (2, 5))
    with torch.no_grad():
        state = model(ids[:, :4], return_state=True).state
        out = model(ids[:, 4:], state=state)
        ref = generic(model, ids[:, 4:], state=state)
    assert torch.equal(out.logits, ref.logits)


@needs_kernel
def test_rope_takes_the_callers_positions(generic):
    model = model_of("tiny-prot-xlstm")
    ids = torch.randint(0, model.config.vocab_size, (2, 6))
    positions = torch.tensor([[40], [7]])
    with torch.no_grad():
        state = model(ids[:, :5], return_state=True).state
        out = model(ids[:, 5:], state=state, position_ids=positions)
        ref = generic(model, ids[:, 5:], state=state, position_ids=positions)
    torch.testing.assert_close(out.logits, ref.logits, **TOL[torch.float32])


@needs_kernel
def test_new_weights_are_picked_up():
    model, other = model_of("tiny-mixed"), model_of("tiny-mixed", d_model=32)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.5)
    ids = torch.randint(0, 12, (1, 5))
    with torch.no_grad():
        state = model(ids[:, :4], return_state=True).state
        model(ids[:, 4:], state=state)  # builds the cached parameter plan
        model.load_state_dict(other.state_dict(), assign=True)
        out = model(ids[:, 4:], state=state)
        ref = other(ids[:, 4:], state=state)
    torch.testing.assert_close(out.logits, ref.logits)


@needs_kernel
def test_a_state_of_the_wrong_shape_is_refused():
    model = model_of("tiny-mixed")
    ids = torch.randint(0, 12, (2, 5))
    with torch.no_grad():
        state = model(ids, return_state=True).state
        with pytest.raises(RuntimeError, match="state"):
            model(ids[:1, :1], state=state)


def test_step_refuses_models_that_see_ahead_and_missing_state():
    model = model_of("tiny-mlstm", bidirectional=True)
    with pytest.raises(ValueError, match="earlier call"):
        model.step(torch.tensor([1]), None)
    causal = model_of("tiny-mlstm")
    state = causal(torch.tensor([[1, 2]]), return_state=True).state
    with pytest.raises(ValueError, match="bidirectional"):
        model.step(torch.tensor([1]), state)


SEES_HOOKS = """
import gc, sys, torch
hooks = torch.nn.modules.module
def count():
    return len(hooks._global_parameter_registration_hooks) + len(hooks._global_module_registration_hooks)
print(count())
import bioxlstm
print(count())
model = bioxlstm.XLSTMLanguageModel(bioxlstm.preset("tiny-mixed")).eval()
ids = torch.randint(0, 12, (1, 4))
model.generate(ids, 3)
print(count())
del model
gc.collect()
print(count())
"""


def test_importing_bioxlstm_installs_no_hooks_and_generation_removes_its_own():
    """Import changes nothing global; the fused step's assignment hooks live only as long as a
    model that has run it (none at all where the kernel is unavailable)."""
    out = subprocess.run([sys.executable, "-c", SEES_HOOKS], capture_output=True, text=True,
                         check=True).stdout.split()
    during = "2" if GENERATION_STEP.available() else "0"
    assert out == ["0", "0", during, "0"]


@needs_kernel
def test_a_copy_outliving_its_original_picks_up_new_weights():
    """A deep copy gathers its own parameters, and keeps the assignment hooks alive after the
    model it was copied from is gone."""
    import copy
    import gc

    model, other = model_of("tiny-mixed"), model_of("tiny-mixed")
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.5)
    ids = torch.randint(0, 12, (1, 5))
    with torch.no_grad():
        state = model(ids[:, :4], return_state=True).state
        model(ids[:, 4:], state=state)  # builds the original's parameter plan
        twin = copy.deepcopy(model)
        twin(ids[:, 4:], state=state)
        del model
        gc.collect()
        twin.load_state_dict(other.state_dict(), assign=True)
        out = twin(ids[:, 4:], state=state)
        with forced("reference", OP):
            ref = other(ids[:, 4:], state=state)
    torch.testing.assert_close(out.logits, ref.logits)
