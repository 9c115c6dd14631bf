"""Shared test helpers: deterministic seeds, small random mLSTM/sLSTM inputs, a tiny checkpoint,
the fast paths' implementations to parametrise over (a skipped one is named again in a summary at
the end of the run), and a whole-model comparison of a fast path against its reference."""

import pytest
import torch

from bioxlstm import XLSTMLanguageModel, preset
from bioxlstm.layers.cpu_kernels import build_cpu_kernels
from bioxlstm.layers.fast_paths import FAST_PATHS, REFERENCE, forced

UNAVAILABLE: dict[str, str] = {}  # "<op>: <implementation>" -> why it could not run here


def fast_path_available(op: str, implementation: str = "fused") -> bool:
    """Whether an accelerated implementation of `op` can run here (building it if need be); one
    that cannot is recorded for the end-of-run summary."""
    backend = FAST_PATHS[op].accelerated[implementation].backend
    if backend.available():
        return True
    UNAVAILABLE[f"{op}: {implementation}"] = backend.unavailable_reason()
    return False


def needs_fast_path(op: str, implementation: str = "fused") -> pytest.MarkDecorator:
    """Skip (with the reason, and a line in the summary) where the implementation is unavailable."""
    available = fast_path_available(op, implementation)
    reason = UNAVAILABLE.get(f"{op}: {implementation}", "")
    return pytest.mark.skipif(not available, reason=f"{op} {implementation} unavailable: {reason}")


def implementations(op: str) -> list:
    """Parameters over every implementation of `op` ("reference", then the accelerated ones), each
    accelerated one skipped where it is unavailable; for `FAST_PATHS[op].implementation(name)`."""
    names = list(FAST_PATHS[op].accelerated)
    return [REFERENCE, *(pytest.param(name, marks=needs_fast_path(op, name)) for name in names)]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Name every fast path whose tests were skipped because it could not be built or imported."""
    if not UNAVAILABLE:
        return
    terminalreporter.section("FAST PATHS UNAVAILABLE: their tests were skipped", sep="!",
                             red=True, bold=True)
    for name, reason in sorted(UNAVAILABLE.items()):
        terminalreporter.line(f"  {name}: {reason[:200]}", red=True)


def count_calls(monkeypatch, op: str, implementation: str = "fused") -> list:
    """The first argument of every call of `op`'s implementation from now on (a list that grows)."""
    entry = FAST_PATHS[op].accelerated[implementation]
    calls, run = [], entry.run
    monkeypatch.setattr(entry, "run", lambda *a, **kw: calls.append(a[0]) or run(*a, **kw))
    return calls


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_sessionstart(session):
    """Every CPU kernel built (or loaded from the cache) before collection, outside any test's
    time limit, so no test or time-limited subprocess spends its time compiling; each is named in
    the log as it becomes ready (a first build takes minutes)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")

    def report(name: str, available: bool, seconds: float) -> None:
        if reporter is not None:
            reporter.write_line(f"CPU kernel {name}: {'ready' if available else 'unavailable'} "
                                f"({seconds:.1f} s)")

    build_cpu_kernels(report)


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


def fused_and_reference_runs(monkeypatch, preset_name: str, op: str) -> tuple[list, int]:
    """A tiny float64 model's logits (two calls, the second from the first's state) and all
    parameter gradients, first with `op`'s fast path (its calls counted), then with `op` forced to
    its reference. Returns both runs and the number of fast-path calls, which the second run must
    not add to."""
    torch.manual_seed(0)
    model = XLSTMLanguageModel(preset(preset_name)).double()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    ids = torch.randint(0, 12, (2, 21))

    def run() -> list:
        model.zero_grad()
        first = model(ids[:, :13], return_state=True)
        more = model(ids[:, 13:], state=first.state).logits
        model.loss(ids).backward()
        return [first.logits, more, *(p.grad.clone() for p in model.parameters())]

    calls = count_calls(monkeypatch, op)
    fused = run()
    count = len(calls)
    with forced(REFERENCE, op):
        reference = run()
    assert len(calls) == count
    return [fused, reference], count
