"""`build_cpu_kernels` and `bioxlstm kernels` cover every optional CPU kernel, and every kernel
source is one of them."""

from bioxlstm.cli import main
from bioxlstm.layers import backends, blocks, generation_step  # noqa: F401 (registers the fast paths)
from bioxlstm.layers.cpu_build import COMMON_HEADER, CSRC, CpuKernel
from bioxlstm.layers.cpu_kernels import KERNELS, build_cpu_kernels
from bioxlstm.layers.fast_paths import FAST_PATHS


def test_every_kernel_source_is_listed_and_includes_the_common_header() -> None:
    sources = {path.stem for path in CSRC.glob("*.cpp")}
    assert sources == {kernel.source for kernel in KERNELS.values()}
    for source in sources:
        assert f'#include "{COMMON_HEADER}"' in (CSRC / f"{source}.cpp").read_text()


def test_every_cpu_fast_path_runs_a_listed_kernel() -> None:
    backends_used = [fast.backend for path in FAST_PATHS.values()
                     for fast in path.accelerated.values()]
    cpu = [backend for backend in backends_used if isinstance(backend, CpuKernel)]
    assert set(map(id, cpu)) == set(map(id, KERNELS.values())) and len(cpu) == len(KERNELS)


def test_build_reports_each_kernel_and_its_availability() -> None:
    seen = []
    available = build_cpu_kernels(lambda name, ok, seconds: seen.append((name, ok, seconds)))
    assert [name for name, _, _ in seen] == list(KERNELS) == list(available)
    for name, ok, seconds in seen:
        assert ok is available[name] is (KERNELS[name].load() is not None) and seconds >= 0


def test_cli_lists_every_kernel(capsys, monkeypatch) -> None:
    monkeypatch.delenv("BIOXLSTM_NO_EXTENSIONS", raising=False)  # listed, available or not
    assert main(["kernels"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in KERNELS) and f"{len(KERNELS)} CPU kernels" in out


def test_cli_says_when_kernels_are_switched_off(capsys, monkeypatch) -> None:
    monkeypatch.setenv("BIOXLSTM_NO_EXTENSIONS", "1")
    assert main(["kernels"]) == 0
    assert "BIOXLSTM_NO_EXTENSIONS=1" in capsys.readouterr().out
