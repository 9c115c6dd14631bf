"""The wheel works on its own: installed outside the checkout it finds its data and kernels."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtual environment with only the built wheel (--no-deps) installed; the project
    environment's site-packages are visible as plain paths (for torch and the other dependencies),
    so its editable install of the checkout is not."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(root / "dist")], check=True,
                   capture_output=True)
    wheel = next((root / "dist").glob("bioxlstm-*.whl"))
    env = root / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    site = Path(subprocess.run([str(env / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install",
                    "--no-deps", "-q", str(wheel)], check=True, capture_output=True)
    return env


def _run(env: Path, cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(env / "bin" / "bioxlstm"), *args], cwd=cwd, env=clean,
                          capture_output=True, text=True, timeout=timeout)


def test_the_installed_wheel_lists_its_data_and_runs_the_demo(installed, tmp_path):
    where = subprocess.run([str(installed / "bin" / "python"), "-c",
                            "import bioxlstm; print(bioxlstm.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout
    assert str(installed) in where and str(ROOT) not in where  # the wheel, not the checkout

    listed = _run(installed, tmp_path, "datasets")
    assert listed.returncode == 0, listed.stderr
    assert "human_demo_genome" in listed.stdout and "chembl_train_10k" in listed.stdout
    genome = Path(_run(installed, tmp_path, "datasets", "human_demo_genome").stdout.strip())
    assert genome.is_file() and str(installed) in str(genome)

    demo = _run(installed, tmp_path, "demo", "--quick", "--run-dir", "run")
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert (tmp_path / "run" / "finetune" / "predictions.csv").is_file()
    assert "test accuracy" in demo.stdout
    assert "using PyTorch code" not in demo.stderr  # the kernel sources travelled in the wheel
