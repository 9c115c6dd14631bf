"""Supervised fitness from a deep mutational scan: random and position-disjoint splits, the run
beside the zero-shot score on the same test variants, and refusals."""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch

from bioxlstm import XLSTMLanguageModel, datasets, preset
from bioxlstm.cli import main
from bioxlstm.data.dms import check_mutant
from bioxlstm.tasks.finetune import FinetuneConfig
from bioxlstm.tasks.fitness_supervised import SupervisedFitnessConfig, run_supervised_fitness, split_variants

WT = "MKTAYIAKQRQISFVKSHFSRQ"


def _variants(names):
    return [check_mutant(m, WT) for m in names]


def test_random_split_is_seeded_and_disjoint():
    variants = _variants([f"K2{a}" for a in "ACDEFGHILMNPQRSTVWY"])
    train, test, dropped = split_variants(variants, "random", 0.25, seed=0)
    assert len(test) == 5 and len(train) == 14 and dropped == 0 and not set(train) & set(test)
    assert split_variants(variants, "random", 0.25, seed=0)[1] == test
    assert split_variants(variants, "random", 0.25, seed=1)[1] != test


def test_position_split_sees_no_test_position_in_training():
    names = [f"{WT[p]}{p + 1}{a}" for p in range(12) for a in "AGW" if WT[p] != a] + ["K2A:T3G"]
    variants = _variants(names)
    train, test, dropped = split_variants(variants, "position", 0.3, seed=0)
    positions = [{p for p, _, _ in variants[j].substitutions} for j in range(len(variants))]
    seen = set().union(*(positions[j] for j in train))
    assert test and not seen & set().union(*(positions[j] for j in test))
    assert len(train) + len(test) + dropped == len(variants)
    assert len(test) >= 0.3 * len(variants) - 3  # whole positions, so roughly the share asked for


@pytest.fixture(scope="module")
def protein_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("prot")
    torch.manual_seed(0)
    XLSTMLanguageModel(preset("tiny-prot-xlstm")).save_pretrained(path)
    return path


def test_pab1_position_split_reports_supervised_baseline_and_zero_shot(tmp_path, protein_checkpoint):
    config = SupervisedFitnessConfig(
        split="position", score_column="log", first_position=126,
        finetune=FinetuneConfig(epochs=1, select="spearman", baseline="kmer", task="regression",
                                batch_size=64, progress=False, device="cpu"))
    result = run_supervised_fitness(protein_checkpoint, datasets.path("pab1_dms"), tmp_path / "o", config,
                                    wild_type=str(datasets.path("pab1_wt")))
    assert list(result.spearman) == ["xLSTM supervised", "2-mer ridge regression", "xLSTM zero-shot (FIM)"]
    assert all(-1 <= v <= 1 for v in result.spearman.values())
    assert result.counts["train"] + result.counts["test"] == 1188 and result.counts["test"] >= 230
    positions = {}
    for part in ("train", "test"):
        with open(tmp_path / "o" / "data" / f"{part}.csv") as fh:
            positions[part] = {int(re.match(r"[A-Z](\d+)", r["mutant"]).group(1)) for r in csv.DictReader(fh)}
    assert not positions["train"] & positions["test"]
    with open(tmp_path / "o" / "zero_shot.csv") as fh:
        assert sum(1 for _ in csv.DictReader(fh)) == result.counts["test"]
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["split"] == "position" and "torch" in summary["versions"]


@pytest.mark.parametrize("extra, message", [
    (["--num-homologs", "5"], "--num-homologs applies to the zero-shot score with --msa only"),
    (["--split", "half"], "invalid choice"),
    (["--first-position", "1"], "measured substitutions fit the wild type"),
])
def test_cli_refusals_are_one_line(tmp_path, capsys, protein_checkpoint, extra, message):
    argv = ["fitness-supervised", str(protein_checkpoint), "--dms", str(datasets.path("pab1_dms")),
            "--wt", str(datasets.path("pab1_wt")), "--score-column", "log", "--out", str(tmp_path / "o")]
    if "--first-position" not in extra:
        argv += ["--first-position", "126"]
    try:
        code = main([*argv, *extra])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_a_dna_checkpoint_is_refused(tmp_path, capsys):
    XLSTMLanguageModel(preset("tiny-mlstm")).save_pretrained(tmp_path / "dna")
    assert main(["fitness-supervised", str(tmp_path / "dna"), "--dms", str(datasets.path("pab1_dms")),
                 "--wt", str(datasets.path("pab1_wt")), "--out", str(tmp_path / "o")]) == 2
    assert "supervised fitness needs a protein model" in capsys.readouterr().err
