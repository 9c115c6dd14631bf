"""A run killed with SIGKILL between checkpoints and resumed ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

STEPS = 60


def _command(run_dir: Path, fasta: Path, config: Path, resume: bool) -> list[str]:
    return [sys.executable, "-m", "bioxlstm", "pretrain", "--preset", "tiny-mlstm", "--fasta", str(fasta),
            "--train-config", str(config), "--run-dir", str(run_dir), "--steps", str(STEPS),
            "--batch-size", "2", "--seq-len", "48", "--device", "cpu", *(["--resume"] if resume else [])]


def _last_step(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [json.loads(line).get("step", 0) for line in path.read_text().splitlines() if line.strip()]
    return max(steps, default=0)


def test_sigkill_between_checkpoints_then_resume_is_bit_identical(tmp_path):
    torch.manual_seed(0)
    fasta = tmp_path / "seq.fa"
    fasta.write_text(">s\n" + "".join("ACGT"[j] for j in torch.randint(0, 4, (20_000,))) + "\n")
    config = tmp_path / "train.yaml"
    config.write_text("log_every: 1\nsave_every: 10\nlr: 0.003\nseed: 7\nprogress: false\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    straight = tmp_path / "straight"
    subprocess.run(_command(straight, fasta, config, False), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_command(killed, fasta, config, False), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _last_step(killed) < 15 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = _last_step(killed)
    assert 15 <= stopped_at < STEPS, "the run must be killed mid-way, after a checkpoint"
    subprocess.run(_command(killed, fasta, config, True), check=True, env=env, capture_output=True)

    resumed_from = json.loads((killed / "run.json").read_text())["resumed_at_steps"]
    assert resumed_from and resumed_from[0] % 10 == 0 and resumed_from[0] <= stopped_at
    a = load_file(str(straight / "checkpoint" / "model.safetensors"))
    b = load_file(str(killed / "checkpoint" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = {}
    for run in (straight, killed):
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        losses[run.name] = [r["loss"] for r in records if "loss" in r]
    assert losses["straight"] == losses["killed"]
