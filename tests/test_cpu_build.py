"""The shared extension loader: opt-out by environment, fallback builds, a clean failure, build
names that follow the sources, the sources in each build's own directory, a build lock that dies
with its process."""

import platform
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
import torch.utils.cpp_extension

from bioxlstm.layers import cpu_build


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("BIOXLSTM_NO_EXTENSIONS", "1")
    assert cpu_build.build_extension("never_built", "test kernel") is None


@pytest.fixture
def fake_loader(monkeypatch, tmp_path):
    """Replace torch's loader by a recorder that fails for the builds named in the set it returns
    ("k", "k_nomvec"; any kernel's sources made up, builds under tmp_path); it records (name,
    sources, ldflags) of each call."""
    calls, failing = [], set()

    def load(name, sources, extra_cflags, extra_ldflags):
        calls.append((name, sources, extra_ldflags))
        if name.rsplit("_", 1)[0] in {f"bioxlstm_{build}" for build in failing}:
            raise RuntimeError(f"cannot build {name}")
        return name

    monkeypatch.delenv("BIOXLSTM_NO_EXTENSIONS", raising=False)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(torch.utils.cpp_extension, "load", load)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(cpu_build, "sources",
                        lambda kernel: {f"{kernel}.cpp": b"int f();", cpu_build.COMMON_HEADER: b""})
    return calls, failing


def test_libmvec_build_first_then_one_without(fake_loader):
    calls, failing = fake_loader
    failing.add("k")
    assert cpu_build.build_extension("k", "test kernel").startswith("bioxlstm_k_nomvec_")
    assert [name.rsplit("_", 1)[0] for name, _, _ in calls] == ["bioxlstm_k", "bioxlstm_k_nomvec"]
    assert "-lmvec" in calls[0][2] and "-lmvec" not in calls[1][2]


def test_every_build_failing_returns_none_and_says_so(fake_loader, capsys):
    _, failing = fake_loader
    failing.update({"k", "k_nomvec"})
    assert cpu_build.build_extension("k", "test kernel") is None
    err = capsys.readouterr().err
    assert "test kernel unavailable, using PyTorch code" in err and "cannot build" in err
    assert "cannot build bioxlstm_k_nomvec_" in cpu_build.FAILED_BUILDS["k"]


def test_missing_sources_mean_pytorch_code(monkeypatch, capsys):
    monkeypatch.delenv("BIOXLSTM_NO_EXTENSIONS", raising=False)
    assert cpu_build.build_extension("no_such_kernel", "test kernel") is None
    assert "test kernel unavailable" in capsys.readouterr().err


def test_each_build_compiles_copies_of_its_sources_in_its_own_directory(fake_loader, tmp_path):
    calls, _ = fake_loader
    name = cpu_build.build_extension("k", "test kernel")
    (source,) = calls[0][1]
    assert source == str(tmp_path / name / "k.cpp")
    assert (tmp_path / name / "k.cpp").read_bytes() == b"int f();"
    assert (tmp_path / name / cpu_build.COMMON_HEADER).exists()


def test_build_names_follow_the_sources_and_flags():
    files = {"k.cpp": b"int f();", cpu_build.COMMON_HEADER: b"#pragma once"}
    name = cpu_build.module_name("k", "", files, ["-O3"], ["-lmvec"])
    assert name.startswith("bioxlstm_k_") and name == cpu_build.module_name(
        "k", "", dict(files), ["-O3"], ["-lmvec"])
    others = [cpu_build.module_name("k", "", {**files, "k.cpp": b"int g();"}, ["-O3"], ["-lmvec"]),
              cpu_build.module_name("k", "", {**files, cpu_build.COMMON_HEADER: b""}, ["-O3"],
                                    ["-lmvec"]),
              cpu_build.module_name("k", "", files, ["-O2"], ["-lmvec"]),
              cpu_build.module_name("k", "", files, ["-O3"], [])]
    assert len({name, *others}) == 5


def test_each_torch_installation_has_its_own_build(monkeypatch):
    files = {"k.cpp": b"int f();", cpu_build.COMMON_HEADER: b""}
    here = cpu_build.module_name("k", "", files, ["-O3"], [])
    monkeypatch.setattr(torch, "__file__", "/other/venv/site-packages/torch/__init__.py")
    assert cpu_build.module_name("k", "", files, ["-O3"], []) != here


def test_the_loader_builds_under_the_lock_with_no_orphaned_torch_lock(fake_loader, tmp_path):
    calls, _ = fake_loader
    orphans = []
    for suffix, cflags, ldflags in cpu_build.builds(avx512=False):  # torch locks of killed builds
        name = cpu_build.module_name("kern", suffix, cpu_build.sources("kern"), cflags, ldflags)
        (tmp_path / name).mkdir()
        orphans.append(tmp_path / name / "lock")
        orphans[-1].touch()
    cpu_build.build_extension("kern", "test kernel")
    assert calls and not orphans[0].exists()


def test_a_failed_build_is_not_tried_again_in_later_processes(fake_loader, capsys):
    calls, failing = fake_loader
    failing.update({"k", "k_nomvec"})
    assert cpu_build.build_extension("k", "test kernel") is None
    assert len(calls) == 2
    assert cpu_build.build_extension("k", "test kernel") is None  # as a later process would
    assert len(calls) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "cannot build" in err and "delete " in err and cpu_build.FAILED_MARK in err


def test_a_build_waits_for_another_holding_the_lock(tmp_path, capsys):
    entered = threading.Event()

    def build():
        with cpu_build.build_lock(tmp_path):
            entered.set()

    with cpu_build.build_lock(tmp_path):
        (tmp_path / "lock").touch()  # torch's lock of the build in progress: kept
        waiting = threading.Thread(target=build)
        waiting.start()
        assert not entered.wait(0.5)
        assert (tmp_path / "lock").exists()
        (tmp_path / "lock").unlink()
    waiting.join(10)
    assert entered.is_set() and "waiting for another process" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "win32", reason="flock")
def test_a_builder_killed_midway_blocks_no_later_build(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import pathlib, sys, time\n"
        "from bioxlstm.layers.cpu_build import build_lock\n"
        "with build_lock(pathlib.Path(sys.argv[1])):\n"
        "    (pathlib.Path(sys.argv[1]) / 'lock').touch()\n"
        "    print('building', flush=True)\n"
        "    time.sleep(600)\n"), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "building"
    holder.send_signal(signal.SIGKILL)
    holder.wait(30)
    start = time.monotonic()
    with cpu_build.build_lock(tmp_path):
        assert not (tmp_path / "lock").exists()
    assert time.monotonic() - start < 10
    assert "removed the lock of an interrupted build" in capsys.readouterr().err


def test_a_kernel_builds_once_per_process(monkeypatch):
    built = []
    monkeypatch.setattr(cpu_build, "build_extension", lambda *a: built.append(a) or None)
    kernel = cpu_build.CpuKernel("k", "test", avx512=True)
    assert kernel.load() is None and not kernel.available()
    assert built == [("k", "test CPU kernel", True)]
