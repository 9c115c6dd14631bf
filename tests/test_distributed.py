"""Multi-process training: 2 CPU ranks (gloo) match one process on the same global batch."""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from bioxlstm import XLSTMLanguageModel, preset
from bioxlstm.cli import main
from bioxlstm.data.batches import TokenWindows, eval_batches
from bioxlstm.distributed import DistEnv, eval_rows, shard_rows
from bioxlstm.errors import ConfigError
from bioxlstm.train import TrainConfig, Trainer

SEQ_LEN, BATCH = 16, 4
pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is missing")


def _config(steps: int, strategy: str) -> TrainConfig:
    return TrainConfig(device="cpu", progress=False, log_every=1, max_steps=steps,
                       batch_size=BATCH, grad_accum_steps=2, schedule="constant", lr=3e-3,
                       eval_every=2, eval_batches=3, save_every=2, distributed=strategy)


def _stream(seed: int) -> torch.Tensor:
    return torch.randint(0, 12, (2000,), generator=torch.Generator().manual_seed(seed))


def _some_ignored(ids: torch.Tensor) -> torch.Tensor:
    """Labels without the ids below 4, so rows (and ranks) hold different numbers of targets."""
    return ids.masked_fill(ids < 4, -100)


def _trainer(steps: int, strategy: str, run_dir: Path, resume: bool = False) -> Trainer:
    torch.manual_seed(0)
    model = XLSTMLanguageModel(preset("tiny-mlstm"))
    valid = functools.partial(eval_batches, _stream(2), SEQ_LEN, 3, 3)  # 3 rows: an uneven split
    source = TokenWindows(_stream(1), SEQ_LEN, BATCH, seed=5, labels=_some_ignored)
    return Trainer(model, _config(steps, strategy), source, run_dir, valid, resume=resume)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Complete weights on every rank (FSDP shards are gathered)."""
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
            for k, v in model.state_dict().items()}


def _worker(rank: int, port: int, base: Path, strategy: str) -> None:
    """One rank: 2 steps into its own run_dir, then resume in rank 0's run_dir up to step 4.

    The rows the model trained on in the first part go to rows{rank}.pt.
    """
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    first = _trainer(2, strategy, base / f"rank{rank}")
    seen: list[torch.Tensor] = []
    first.model.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].clone()) if module.training else None)
    first.train()
    torch.save(torch.stack(seen), base / f"rows{rank}.pt")
    trainer = _trainer(4, strategy, base / "rank0", resume=True)
    trainer.train()
    torch.save(_weights(trainer.model), base / f"weights{rank}.pt")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """One process, 4 uninterrupted steps on the same global batches."""
    run_dir = tmp_path_factory.mktemp("single")
    trainer = _trainer(4, "ddp", run_dir)
    trainer.train()
    return _records(run_dir), _weights(trainer.model)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_resumed_match_one_process_and_only_rank0_writes(tmp_path, reference,
                                                                    strategy):
    mp.spawn(_worker, args=(_free_port(), tmp_path, strategy), nprocs=2)
    assert not (tmp_path / "rank1").exists()  # rank 1 wrote nothing in its own run_dir
    assert sorted(p.name for p in (tmp_path / "rank0").iterdir() if p.name != ".lock") == [
        "checkpoint", "metrics.jsonl", "run.json"]
    assert json.loads((tmp_path / "rank0" / "run.json").read_text())["world_size"] == 2
    source = TokenWindows(_stream(1), SEQ_LEN, BATCH, seed=5, labels=_some_ignored)
    drawn = [source.next_batch() for _ in range(4)]  # 2 steps x 2 micro-batches
    batches = torch.stack([b["input_ids"] for b in drawn])
    targets = [[int((b["labels"][r:r + 2, 1:] != -100).sum()) for r in (0, 2)] for b in drawn]
    assert any(a != b for a, b in targets)  # the ranks' shares weigh differently
    for rank in (0, 1):  # each rank trained on its own half of every global batch
        rows = torch.load(tmp_path / f"rows{rank}.pt")
        assert torch.equal(rows, batches[:, 2 * rank:2 * rank + 2])
    records, weights = reference
    got = _records(tmp_path / "rank0")
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for mine, ref in zip(got, records, strict=True):
        assert mine["loss"] == pytest.approx(ref["loss"], abs=1e-6)
        assert mine.get("valid_loss", 0.0) == pytest.approx(ref.get("valid_loss", 0.0), abs=1e-6)
    for rank in (0, 1):
        ranked = torch.load(tmp_path / f"weights{rank}.pt")
        for name, value in weights.items():
            torch.testing.assert_close(ranked[name], value, atol=1e-5, rtol=0)


def test_rows_are_split_evenly_and_eval_rows_cover_every_row_once():
    batch = {"input_ids": torch.arange(12).view(6, 2), "objective": "clm"}
    parts = [shard_rows(batch, DistEnv(r, 3, r)) for r in range(3)]
    assert torch.equal(torch.cat([p["input_ids"] for p in parts]), batch["input_ids"])
    assert all(p["objective"] == "clm" for p in parts)
    with pytest.raises(ConfigError, match="multiple of the world size"):
        shard_rows(batch, DistEnv(0, 4, 0))
    small = {"input_ids": torch.arange(6).view(3, 2)}
    shares = [eval_rows(small, DistEnv(r, 4, r)) for r in range(4)]
    counted = [s["input_ids"] for s, counts in shares if counts]
    assert torch.equal(torch.cat(counted), small["input_ids"])
    assert sum(1 for _, counts in shares if not counts) == 1


def test_batch_size_must_divide_over_the_ranks(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 3)
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    with pytest.raises(ConfigError, match="multiple of the number of processes"):
        _trainer(1, "ddp", tmp_path)


def test_unknown_strategy_is_a_config_error():
    with pytest.raises(ConfigError, match="distributed"):
        TrainConfig(distributed="zero3")


def _dna_args(tmp_path: Path) -> list[str]:
    records = [f">r{j}\n{'ACGT'[j % 4] * 7}{'GATTACA' * 40}\n" for j in range(8)]
    (tmp_path / "seqs.fa").write_text("".join(records))
    return ["--fasta", str(tmp_path / "seqs.fa"), "--preset", "tiny-mlstm", "--seq-len", "32"]


def _smiles_args(tmp_path: Path) -> list[str]:
    molecules = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "C1CCNCC1", "OC(=O)CCl", "CCN(CC)CC"]
    (tmp_path / "mols.smi").write_text("\n".join(molecules * 5) + "\n")
    return ["--smiles", str(tmp_path / "mols.smi"), "--preset", "tiny-chem-xlstm"]


@pytest.mark.parametrize("inputs", [_dna_args, _smiles_args])
def test_cli_pretrain_under_torchrun_matches_one_process(tmp_path, inputs):
    args = ["-m", "bioxlstm", "pretrain", *inputs(tmp_path), "--steps", "2", "--batch-size", "4",
            "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", str(_free_port())]
    multi = subprocess.run([*torchrun, *args, "--run-dir", str(tmp_path / "multi")], env=env,
                           capture_output=True, text=True, timeout=120)
    assert multi.returncode == 0, multi.stderr[-2000:]
    assert main([*args[2:], "--run-dir", str(tmp_path / "single")]) == 0
    got, want = _records(tmp_path / "multi"), _records(tmp_path / "single")
    assert [r["step"] for r in got] == [r["step"] for r in want] and want[-1]["step"] == 2
    for mine, ref in zip(got, want):
        assert mine["loss"] == pytest.approx(ref["loss"], abs=1e-6)
    multi_weights = load_file(tmp_path / "multi" / "checkpoint" / "model.safetensors")
    for name, value in load_file(tmp_path / "single" / "checkpoint" / "model.safetensors").items():
        torch.testing.assert_close(multi_weights[name], value, atol=1e-5, rtol=0)
