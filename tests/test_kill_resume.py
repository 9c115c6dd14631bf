"""Runs that cannot lose work, as real processes: SIGKILL at random moments (checkpoint writes
included), SIGTERM, and two processes on one run directory."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

STEPS = 24
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    """A random DNA FASTA and a train config that checkpoints after every step."""
    root = tmp_path_factory.mktemp("kill")
    torch.manual_seed(0)
    fasta = root / "seq.fa"
    fasta.write_text(">s\n" + "".join("ACGT"[j] for j in torch.randint(0, 4, (20_000,))) + "\n")
    config = root / "train.yaml"
    config.write_text("log_every: 1\nsave_every: 1\nlr: 0.003\nseed: 7\nprogress: false\nwarmup_steps: 0\n"
                      "schedule: constant\nsave_every_minutes: 0\n")
    return fasta, config


def _command(run_dir: Path, data: tuple[Path, Path], steps: int = STEPS, resume: bool = True) -> list[str]:
    fasta, config = data
    return [sys.executable, "-m", "bioxlstm", "pretrain", "--preset", "tiny-mlstm", "--fasta", str(fasta),
            "--train-config", str(config), "--run-dir", str(run_dir), "--steps", str(steps),
            "--batch-size", "2", "--seq-len", "48", "--device", "cpu", *(["--resume"] if resume else [])]


def _steps_logged(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


def _wait_for_step(proc: subprocess.Popen, run_dir: Path, above: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while max(_steps_logged(run_dir), default=0) <= above and proc.poll() is None:
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.005)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoint" / "model.safetensors"))


def _losses(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records]


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path, data):
    straight = tmp_path / "straight"
    subprocess.run(_command(straight, data, resume=False), check=True, env=ENV, capture_output=True,
                   timeout=300)

    killed, rng, kills, mid_write = tmp_path / "killed", random.Random(1), 0, 0
    for _ in range(8):
        proc = subprocess.Popen(_command(killed, data), env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        _wait_for_step(proc, killed, max(_steps_logged(killed), default=0))
        time.sleep(rng.uniform(0.0, 0.15))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        mid_write += any((killed / name).exists() for name in (".checkpoint.tmp", "checkpoint.old"))
    assert kills >= 4, "the run should have been killed several times before it finished"
    subprocess.run(_command(killed, data), check=True, env=ENV, capture_output=True,
                   timeout=300)

    a, b = _weights(straight), _weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _steps_logged(killed) == list(range(1, STEPS + 1))
    assert _losses(killed) == _losses(straight)
    print(f"{kills} kills, {mid_write} of them during a checkpoint replacement")


def test_sigterm_saves_a_checkpoint_and_says_how_to_continue(tmp_path, data):
    run = tmp_path / "run"
    proc = subprocess.Popen(_command(run, data, steps=10_000, resume=False), env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_step(proc, run, 3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    stopped = json.loads((run / "checkpoint" / "manifest.json").read_text())["step"]
    assert f"stopped by SIGTERM at step {stopped}; checkpoint saved in {run / 'checkpoint'}" in err
    assert "continue with: bioxlstm pretrain" in err and err.rstrip().endswith("--resume")

    # resumed to a few steps more, it equals a run that went there without stopping
    subprocess.run(_command(run, data, steps=stopped + 3), check=True, env=ENV, capture_output=True,
                   timeout=300)
    straight = tmp_path / "straight"
    subprocess.run(_command(straight, data, steps=stopped + 3, resume=False), check=True, env=ENV,
                   capture_output=True)
    a, b = _weights(straight), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_second_process_cannot_train_in_a_busy_run_directory(tmp_path, data):
    run = tmp_path / "run"
    first = subprocess.Popen(_command(run, data, steps=10_000, resume=False), env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_step(first, run, 1)
        for resume in (False, True):
            second = subprocess.run(_command(run, data, resume=resume), env=ENV, capture_output=True,
                                    text=True)
            assert second.returncode == 2
            assert second.stderr.count("\n") == 1
            assert f"in use by another process (pid {first.pid} " in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the lock died with its process: the run resumes
    resumed = subprocess.run(_command(run, data, steps=max(_steps_logged(run)) + 1), env=ENV,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
