"""One convention for every fast path: an operation's implementations and the dispatcher choosing.

Each operation with a fast path is a `FastPath`: a reference implementation in PyTorch operators,
which always runs, and accelerated ones of the same signature (a compiled CPU kernel, "fused"; a
GPU kernel), each with a guard, `<op>_supported`, saying whether it takes the given arguments,
and a backend (a `cpu_build.CpuKernel`) saying whether it is built or importable. Calling the
FastPath is the operation: it runs the first accelerated implementation whose guard accepts the
arguments and that is available, else the reference. Callers (the blocks, the model) call only
these dispatchers; tests reach every implementation through `FAST_PATHS` and pin a choice with
`forced`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

REFERENCE = "reference"


class Backend(Protocol):
    """What an accelerated implementation runs on: a compiled kernel, a GPU package."""

    def available(self) -> bool:
        """Whether it is built or importable here."""

    def unavailable_reason(self) -> str:
        """Why not, where `available` is False."""


@dataclass
class Accelerated:
    """An accelerated implementation: `run` where `supported(*args)` and `backend.available()`."""

    run: Callable[..., Any]
    supported: Callable[..., bool]
    backend: Backend


class FastPath:
    """One operation: its reference implementation, accelerated ones, and the choice between them."""

    def __init__(self, name: str, reference: Callable[..., Any]) -> None:
        self.name = name
        self.reference = reference
        self.accelerated: dict[str, Accelerated] = {}
        self.forced: str | None = None  # set by `forced`: only this implementation may run
        FAST_PATHS[name] = self

    def register(self, name: str, run: Callable[..., Any], supported: Callable[..., bool],
                 backend: Backend) -> None:
        """Add an accelerated implementation, tried after those registered before it."""
        self.accelerated[name] = Accelerated(run, supported, backend)

    def implementation(self, name: str) -> Callable[..., Any]:
        """The implementation called `name` ("reference" or a registered one), to call directly."""
        return self.reference if name == REFERENCE else self.accelerated[name].run

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the operation: the first accelerated implementation that applies, else the reference.

        The guard runs before the availability check, so a kernel is never built for arguments
        it would not take (the CPU kernels on a GPU run).
        """
        for name, fast in self.accelerated.items():
            if (self.forced in (None, name) and fast.supported(*args, **kwargs)
                    and fast.backend.available()):
                return fast.run(*args, **kwargs)
        return self.reference(*args, **kwargs)


FAST_PATHS: dict[str, FastPath] = {}


def cpu_floats(*tensors: Tensor) -> bool:
    """Whether the tensors are CPU tensors of one dtype, float32 or float64: what CPU kernels take."""
    dtype = tensors[0].dtype
    return dtype in (torch.float32, torch.float64) and all(
        t.device.type == "cpu" and t.dtype == dtype for t in tensors)


@contextmanager
def forced(implementation: str, *names: str) -> Iterator[None]:
    """Within the block, the named operations (all if none) run only `implementation`.

    "reference" turns their fast paths off; an accelerated name allows only that one, which still
    falls back to the reference for arguments it does not take. For tests and comparisons.
    """
    paths = [FAST_PATHS[name] for name in names] if names else list(FAST_PATHS.values())
    before = [path.forced for path in paths]
    for path in paths:
        path.forced = implementation
    try:
        yield
    finally:
        for path, previous in zip(paths, before, strict=True):
            path.forced = previous
