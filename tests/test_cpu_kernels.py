"""`build_cpu_kernels` and `bioxlstm kernels` cover every optional CPU kernel."""

import importlib
import pkgutil

import bioxlstm.layers
from bioxlstm.cli import main
from bioxlstm.layers.cpu_kernels import KERNELS, build_cpu_kernels


def test_every_kernel_module_is_listed() -> None:
    loaders = set()
    for info in pkgutil.iter_modules(bioxlstm.layers.__path__):
        module = importlib.import_module(f"bioxlstm.layers.{info.name}")
        if callable(getattr(module, "load", None)):
            loaders.add(module.load)
    assert loaders == set(KERNELS.values())


def test_build_reports_each_kernel_and_its_availability() -> None:
    seen = []
    available = build_cpu_kernels(lambda name, ok, seconds: seen.append((name, ok, seconds)))
    assert [name for name, _, _ in seen] == list(KERNELS) == list(available)
    for name, ok, seconds in seen:
        assert ok is available[name] is (KERNELS[name]() is not None) and seconds >= 0


def test_cli_lists_every_kernel(capsys) -> None:
    assert main(["kernels"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in KERNELS) and f"{len(KERNELS)} CPU kernels" in out


def test_cli_says_when_kernels_are_switched_off(capsys, monkeypatch) -> None:
    monkeypatch.setenv("BIOXLSTM_NO_EXTENSIONS", "1")
    assert main(["kernels"]) == 0
    assert "BIOXLSTM_NO_EXTENSIONS=1" in capsys.readouterr().out
