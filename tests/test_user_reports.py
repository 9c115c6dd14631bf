"""What users ran into, each as it was reported: a classifier folder given to score, sums that lost
their precision, a mistyped checkpoint path taken for a Hub id, model cards with placeholders."""

from __future__ import annotations

import time

import torch

from bioxlstm import XLSTMLanguageModel, preset
from bioxlstm.classifier import SequenceClassifier
from bioxlstm.cli import main


def test_score_and_generate_refuse_a_classifier_whose_lm_head_was_not_trained(tmp_path, capsys):
    torch.manual_seed(0)
    classifier = SequenceClassifier(XLSTMLanguageModel(preset("tiny-mlstm")), ["0", "1"], 64)
    classifier.save_pretrained(tmp_path / "classifier")
    fasta = tmp_path / "x.fa"
    fasta.write_text(">a\nACGTACGT\n")
    for argv in (["score", str(tmp_path / "classifier"), "--fasta", str(fasta)],
                 ["generate", str(tmp_path / "classifier"), "--num", "1"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "language-model head was not trained" in err
    assert main(["embed", str(tmp_path / "classifier"), "--fasta", str(fasta), "--out",
                 str(tmp_path / "e.npy"), "--device", "cpu"]) == 0  # its hidden states are fine
    card = (tmp_path / "classifier" / "README.md").read_text()
    assert "sequence classifier" in card and "More Information Needed" not in card


def test_log_likelihoods_are_summed_in_float64():
    torch.manual_seed(0)
    model = XLSTMLanguageModel(preset("tiny-mlstm")).eval()
    ids = torch.randint(7, 11, (1, 4000))
    with torch.no_grad():
        logp = model(ids).logits.float().log_softmax(-1)[0, :-1].gather(-1, ids[0, 1:, None])
    exact = logp.double().sum()
    assert abs(float(model.log_likelihood(ids)[0]) - float(exact)) < 1e-9
    assert abs(float(logp.sum()) - float(exact)) > 1e-6  # what a float32 sum would have lost


def test_a_mistyped_local_checkpoint_fails_at_once_without_the_hub(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    start = time.monotonic()
    assert main(["embed", "runs/missing", "--fasta", "x.fa", "--out", "e.npy"]) == 2
    assert time.monotonic() - start < 5
    err = capsys.readouterr().err
    assert "runs/missing/config.json: no such file" in err and "Hub" not in err


def test_a_trained_checkpoint_has_a_model_card_that_says_what_it_is(tmp_path):
    fasta = tmp_path / "x.fa"
    fasta.write_text(">a\n" + "ACGTTGCA" * 200 + "\n")
    assert main(["pretrain", "--preset", "tiny-mlstm", "--fasta", str(fasta), "--run-dir",
                 str(tmp_path / "run"), "--steps", "2", "--batch-size", "2", "--seq-len", "32",
                 "--device", "cpu", "--eval-every", "2"]) == 0
    card = (tmp_path / "run" / "checkpoint" / "README.md").read_text()
    for fact in ("dna (12 tokens)", "d_model 32, 2 blocks (mLSTM)", "parameters", "2 steps",
                 "validation loss", "made by", "language model"):
        assert fact in card, fact
    assert "More Information Needed" not in card and "PytorchModelHubMixin" not in card


def test_fasta_windows_can_be_read_on_either_strand():
    from bioxlstm.data.batches import TokenWindows
    from bioxlstm.strands import DNA_COMPLEMENT

    tokens = torch.randint(7, 12, (500,))
    plain = TokenWindows(tokens, 16, 4, seed=3).next_batch()["input_ids"]
    flipped = TokenWindows(tokens, 16, 4, seed=3, rc_prob=1.0, complement=DNA_COMPLEMENT)
    assert torch.equal(flipped.next_batch()["input_ids"], DNA_COMPLEMENT[plain.flip(1)])


def test_fasta_pretraining_validates_by_default_and_takes_rc_augmentation(tmp_path, capsys):
    import json

    fasta = tmp_path / "x.fa"
    fasta.write_text(">a\n" + "ACGTTGCAAT" * 200 + "\n>b\n" + "GGCATTACGA" * 100 + "\n")
    assert main(["pretrain", "--preset", "tiny-mlstm", "--fasta", str(fasta), "--run-dir",
                 str(tmp_path / "run"), "--steps", "10", "--batch-size", "2", "--seq-len", "32",
                 "--device", "cpu", "--rc-aug", "0.5"]) == 0
    records = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "valid_loss" in r] == list(range(1, 11))
    info = json.loads((tmp_path / "run/run.json").read_text())["train_config"]
    assert info["eval_every"] == 1 and info["warmup_fraction"] == 0.1
    assert main(["pretrain", "--preset", "tiny-prot-xlstm", "--msa-dir", str(tmp_path), "--run-dir",
                 str(tmp_path / "p"), "--rc-aug", "0.5"]) == 2
    assert "--rc-aug applies to DNA" in capsys.readouterr().err


def test_finetune_reports_each_epoch_as_a_line(tmp_path, capsys):
    rows = ["sequence,label"] + [f"{'ACGT' * 5 if j % 2 else 'TTGA' * 5},{j % 2}" for j in range(40)]
    data = tmp_path / "train.csv"
    data.write_text("\n".join(rows) + "\n")
    assert main(["finetune", "--preset", "tiny-mlstm", "--train", str(data), "--out",
                 str(tmp_path / "out"), "--epochs", "2", "--batch-size", "8", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "epoch 1/2: train loss" in err and "epoch 2/2: train loss" in err


def test_a_split_too_small_says_how_many_items_it_needs():
    import pytest as _pytest

    from bioxlstm.errors import ConfigError
    from bioxlstm.tasks.pretrain_smiles import _split

    with _pytest.raises(ConfigError, match="4 molecules cannot be split with valid_fraction=0.1: "
                                           "that needs at least 6 molecules"):
        _split(["C"] * 4, 0.1, 0, "molecules")
