"""The shared extension loader: opt-out by environment, fallback builds, a clean failure."""

import platform
import sys

import torch.utils.cpp_extension

from bioxlstm.layers import cpu_build


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("BIOXLSTM_NO_EXTENSIONS", "1")
    assert cpu_build.build_extension("never_built", "not C++", ["f"], "test kernel") is None


def fake_loader(monkeypatch, failing: set[str]) -> list[tuple[str, list[str]]]:
    """Replace load_inline by a recorder that fails for the names in `failing`."""
    calls = []

    def load_inline(name, cpp_sources, functions, extra_cflags, extra_ldflags):
        calls.append((name, extra_ldflags))
        if name in failing:
            raise RuntimeError(f"cannot build {name}")
        return name

    monkeypatch.delenv("BIOXLSTM_NO_EXTENSIONS", raising=False)
    monkeypatch.setattr(torch.utils.cpp_extension, "load_inline", load_inline)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    return calls


def test_libmvec_build_first_then_one_without(monkeypatch):
    calls = fake_loader(monkeypatch, failing={"k"})
    assert cpu_build.build_extension("k", "src", ["f"], "test kernel") == "k_nomvec"
    assert [name for name, _ in calls] == ["k", "k_nomvec"]
    assert "-lmvec" in calls[0][1] and "-lmvec" not in calls[1][1]


def test_every_build_failing_returns_none_and_says_so(monkeypatch, capsys):
    fake_loader(monkeypatch, failing={"k", "k_nomvec"})
    assert cpu_build.build_extension("k", "src", ["f"], "test kernel") is None
    err = capsys.readouterr().err
    assert "test kernel unavailable, using PyTorch code" in err and "cannot build k_nomvec" in err
