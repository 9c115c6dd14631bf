"""The mlstm_kernels adapter equals the reference chunkwise mLSTM: outputs, end state, gradients.

On CPU the adapter is checked around mlstm_kernels' own pure-torch chunkwise kernel, which takes
the same arguments and state convention as its Triton kernels; on a CUDA machine with Triton the
Triton kernel itself is checked. Both skip cleanly where the package or the GPU is missing.
"""

import pytest
import torch
from conftest import needs_fast_path

from bioxlstm.layers import backends
from bioxlstm.layers.fast_paths import Accelerated, forced
from bioxlstm.layers.mlstm import mlstm_chunkwise
from bioxlstm.layers.mlstm_triton import (
    TRITON_KERNEL,
    adapt,
    mlstm_chunkwise_triton_supported,
    package_kernel,
)

NATIVE = "chunkwise--native_autograd"


def _inputs(S: int, dtype: torch.dtype, device: str, with_state: bool, B: int = 2, NH: int = 2,
            DH: int = 16) -> tuple:
    g = torch.Generator().manual_seed(S)
    q, k, v = (torch.randn(B, NH, S, DH, generator=g, dtype=dtype) for _ in range(3))
    i = torch.randn(B, NH, S, generator=g, dtype=dtype)
    f = torch.randn(B, NH, S, generator=g, dtype=dtype) + 3
    state = None
    if with_state:
        state = (torch.randn(B, NH, DH, DH, generator=g, dtype=dtype),
                 torch.rand(B, NH, DH, generator=g, dtype=dtype),
                 torch.randn(B, NH, generator=g, dtype=dtype))
    move = lambda t: t.to(device).requires_grad_()  # noqa: E731
    return tuple(move(t) for t in (q, k, v, i, f)), (
        None if state is None else tuple(move(t) for t in state))


def _run(kernel, tensors: tuple, state: tuple | None) -> tuple[list, list]:
    h, end = kernel(*tensors, state, 32)
    loss = (h * torch.linspace(-1, 1, h.numel(), dtype=h.dtype, device=h.device).view_as(h)).sum()
    loss = loss + sum((t * (j + 1)).sum() for j, t in enumerate(end))
    leaves = [*tensors, *(state or ())]
    return [h, *end], list(torch.autograd.grad(loss, leaves))


def _reference(*args):
    q, k, v, i, f, state, chunk_size = args
    return mlstm_chunkwise(q, k, v, i, f, state, return_state=True, chunk_size=chunk_size)


def _check(kernel, S: int, dtype: torch.dtype, device: str, with_state: bool, tol: float) -> None:
    tensors, state = _inputs(S, dtype, device, with_state)
    got_out, got_grad = _run(kernel, tensors, state)
    tensors, state = _inputs(S, dtype, device, with_state)
    want_out, want_grad = _run(_reference, tensors, state)
    for got, want in zip([*got_out, *got_grad], [*want_out, *want_grad], strict=True):
        torch.testing.assert_close(got, want, atol=tol, rtol=tol)


@pytest.mark.skipif(package_kernel(NATIVE) is None, reason="mlstm_kernels is not installed")
@pytest.mark.parametrize("S", [64, 128, 100, 30])
@pytest.mark.parametrize("with_state", [False, True])
def test_adapter_matches_reference_on_cpu(S, with_state):
    _check(adapt(package_kernel(NATIVE)), S, torch.float64, "cpu", with_state, 1e-9)


@needs_fast_path("mLSTM chunkwise", "triton")
@pytest.mark.parametrize("S", [64, 256, 200])
@pytest.mark.parametrize("with_state", [False, True])
def test_triton_kernel_matches_reference_on_gpu(S, with_state):
    _check(adapt(package_kernel(TRITON_KERNEL)), S, torch.float32, "cuda", with_state, 2e-3)


def test_triton_is_never_chosen_for_cpu_tensors():
    q, g = torch.zeros(1, 1, 4, 8), torch.zeros(1, 1, 4)
    assert not mlstm_chunkwise_triton_supported(q, q, q, g, g, None, 64)


@pytest.mark.skipif(package_kernel(NATIVE) is None, reason="mlstm_kernels is not installed")
def test_chunkwise_dispatches_to_the_package_kernel_where_supported(monkeypatch):
    calls = []
    native = adapt(package_kernel(NATIVE))

    def spy(*args):
        calls.append(args[0].shape)
        return native(*args)

    class Everywhere:
        def available(self):
            return True

    chunkwise = backends.mlstm_kernel("chunkwise")
    monkeypatch.setitem(chunkwise.accelerated, "triton", Accelerated(spy, lambda *a: True,
                                                                      Everywhere()))
    tensors, state = _inputs(96, torch.float64, "cpu", True)
    with forced("triton", "mLSTM chunkwise"):
        h, end = chunkwise(*tensors, state, 32)
    want_h, want_end = _reference(*tensors, state, 32)
    assert calls == [tensors[0].shape]
    for got, want in zip([h, *end], [want_h, *want_end], strict=True):
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)
