"""The dispatcher every fast path shares: the first accelerated implementation that takes the
arguments and is available, else the reference; `forced` pins one; nothing is built for
arguments no implementation takes."""

import pytest

from bioxlstm.layers import fast_paths
from bioxlstm.layers.fast_paths import FastPath, forced


class Backend:
    """A backend that counts how often it was asked whether it is available."""

    def __init__(self, available: bool):
        self.is_available, self.asked = available, 0

    def available(self) -> bool:
        self.asked += 1
        return self.is_available

    def unavailable_reason(self) -> str:
        return "test"


@pytest.fixture
def path(monkeypatch):
    """An operation x -> its implementation's name: "slow" where x < 10 and "gpu" where x > 100
    (available), "fused" where x >= 10 (not built); registered only for the test."""
    monkeypatch.setattr(fast_paths, "FAST_PATHS", {})
    op = FastPath("test op", lambda x: "reference")
    op.register("fused", lambda x: "fused", lambda x: x >= 10, Backend(False))
    op.register("gpu", lambda x: "gpu", lambda x: x > 100, Backend(True))
    return op


def test_the_first_implementation_that_applies_runs(path):
    assert [path(1), path(50), path(500)] == ["reference", "reference", "gpu"]
    assert fast_paths.FAST_PATHS == {"test op": path}


def test_availability_is_asked_only_for_arguments_an_implementation_takes(path):
    path(1)
    assert [fast.backend.asked for fast in path.accelerated.values()] == [0, 0]
    path(500)
    assert [fast.backend.asked for fast in path.accelerated.values()] == [1, 1]


def test_forced_pins_an_implementation_and_restores_the_choice(path):
    with forced("reference"):
        assert path(500) == "reference"
    with forced("gpu", "test op"):
        assert (path(1), path(500)) == ("reference", "gpu")
    path.accelerated["fused"].backend.is_available = True
    with forced("gpu", "test op"):
        assert path(500) == "gpu"
    assert path(500) == "fused"


def test_each_implementation_can_be_called_by_name(path):
    assert [path.implementation(name)(500) for name in ("reference", "fused", "gpu")] == [
        "reference", "fused", "gpu"]
