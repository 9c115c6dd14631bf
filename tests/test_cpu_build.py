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


def test_a_stale_build_lock_is_removed_and_a_fresh_one_kept(monkeypatch, tmp_path, capsys):
    import os
    import time

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    for name, age in (("old_build", cpu_build.STALE_LOCK_S + 60), ("running_build", 5)):
        (tmp_path / name).mkdir()
        lock = tmp_path / name / "lock"
        lock.touch()
        os.utime(lock, (time.time() - age, time.time() - age))
    assert cpu_build.clear_stale_lock("old_build") is True
    assert not (tmp_path / "old_build" / "lock").exists()
    assert "stale build lock" in capsys.readouterr().err
    assert cpu_build.clear_stale_lock("running_build") is False
    assert (tmp_path / "running_build" / "lock").exists()
    assert cpu_build.clear_stale_lock("never_built") is False


def test_the_loader_clears_stale_locks_before_each_build(monkeypatch):
    cleared = []
    calls = fake_loader(monkeypatch, failing=set())
    monkeypatch.setattr(cpu_build, "clear_stale_lock", cleared.append)
    cpu_build.build_extension("kern", "src", ["f"], "test kernel")
    assert cleared == [name for name, _ in calls] and cleared
