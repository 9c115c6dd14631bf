"""Fine-tuning: padding-invariant pooling, learning, determinism, outputs, reload, CLI."""

import csv
import json

import numpy as np
import pytest
import torch

from bioxlstm import XLSTMLanguageModel, datasets, preset
from bioxlstm.alphabets import DNA
from bioxlstm.classifier import SequenceClassifier, load_classifier
from bioxlstm.cli import main
from bioxlstm.errors import ConfigError
from bioxlstm.pooling import reverse_complement_rows
from bioxlstm.strands import reverse_complement
from bioxlstm.tasks.finetune import FinetuneConfig, finetune
from bioxlstm.tasks.inputs import pad_batch

PROMOTERS = datasets.path("promoter_core")
FAST = dict(batch_size=16, progress=False, device="cpu")


def write_toy(path, n, seed, length=24):
    """An easy task: class 1 sequences are GC-rich, class 0 AT-rich."""
    rng = np.random.default_rng(seed)
    lines = ["sequence,label"]
    for j in range(n):
        label = j % 2
        probs = [0.1, 0.4, 0.4, 0.1] if label else [0.4, 0.1, 0.1, 0.4]
        lines.append("".join(rng.choice(list("ACGT"), size=length, p=probs)) + f",{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("name", ["tiny-mlstm", "tiny-mixed"])
def test_right_padding_does_not_change_pooled_features(name):
    model = XLSTMLanguageModel(preset(name)).eval()
    classifier = SequenceClassifier(model, ["0", "1"], 100).eval()
    seqs = [DNA.encode("ACGTTGCA" * 5), DNA.encode("GGA"), DNA.encode("TTGACCA" * 3)]
    ids, lengths = pad_batch(seqs, DNA)
    with torch.no_grad():
        batched = classifier.features(ids, lengths)
        for row, seq in enumerate(seqs):
            alone = classifier.features(*pad_batch([seq], DNA))
            torch.testing.assert_close(batched[row], alone[0], atol=1e-5, rtol=1e-5)
            expected = model(ids[row:row + 1, :len(seq) + 1]).hidden[0, 1:].mean(0)
            torch.testing.assert_close(batched[row], expected, atol=1e-5, rtol=1e-5)


def test_learns_an_easy_task_and_writes_outputs(tmp_path):
    train, test = write_toy(tmp_path / "train.csv", 160, 0), write_toy(tmp_path / "test.csv", 40, 1)
    config = FinetuneConfig(epochs=4, lr=3e-3, **FAST)
    result = finetune(train, tmp_path / "out", config, test=test, preset_name="tiny-mlstm")
    assert result.metrics["accuracy"] >= 0.9 and result.metrics["mcc"] >= 0.8
    history = json.loads((tmp_path / "out" / "metrics.json").read_text())["history"]
    assert len(history) == 4
    accs = [h["valid_accuracy"] for h in history]
    assert result.best_epoch == accs.index(max(accs)) + 1
    with open(tmp_path / "out" / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 40 and list(rows[0]) == ["index", "id", "label", "predicted", "prob_0",
                                                 "prob_1"]
    probs = np.array([[float(r["prob_0"]), float(r["prob_1"])] for r in rows])
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    correct = np.mean([r["label"] == r["predicted"] for r in rows])
    assert correct == pytest.approx(result.metrics["accuracy"])
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["seed"] == 0 and "torch" in run["versions"] and run["records"]["test"] == 40
    assert run["records"]["train"] + run["records"]["valid"] == 160

    classifier = load_classifier(tmp_path / "out" / "classifier")
    assert classifier.classes == ["0", "1"]
    seqs = [DNA.encode(line.split(",")[0]) for line in test.read_text().splitlines()[1:4]]
    with torch.no_grad():
        reloaded = classifier(*pad_batch(seqs, DNA)).softmax(-1).numpy()
    assert np.allclose(reloaded, probs[:3], atol=1e-5)


def test_same_seed_same_result_and_seed_matters(tmp_path):
    train = write_toy(tmp_path / "train.csv", 60, 0)
    config = FinetuneConfig(epochs=2, **FAST)
    a = finetune(train, tmp_path / "a", config, preset_name="tiny-mlstm")
    b = finetune(train, tmp_path / "b", config, preset_name="tiny-mlstm")
    assert a.history == b.history
    assert (tmp_path / "a" / "predictions.csv").read_text() == \
        (tmp_path / "b" / "predictions.csv").read_text()
    c = finetune(train, tmp_path / "c", FinetuneConfig(epochs=2, seed=1, **FAST),
                 preset_name="tiny-mlstm")
    assert c.history != a.history


def test_frozen_backbone_only_trains_the_head(tmp_path):
    ckpt = tmp_path / "ckpt"
    XLSTMLanguageModel(preset("tiny-mlstm")).save_pretrained(ckpt)
    train = write_toy(tmp_path / "train.csv", 40, 0)
    finetune(train, tmp_path / "out", FinetuneConfig(epochs=1, freeze_backbone=True, **FAST),
             checkpoint=ckpt)
    before = XLSTMLanguageModel.from_pretrained(ckpt).state_dict()
    after = load_classifier(tmp_path / "out" / "classifier")
    assert all(torch.equal(before[k], v) for k, v in after.backbone.state_dict().items())


def test_truncation_warns_with_a_count(tmp_path, capsys):
    train = tmp_path / "train.csv"
    train.write_text("sequence,label\n" + "".join(f"{'ACGT' * (2 + j)},{j % 2}\n" for j in range(20)))
    finetune(train, tmp_path / "out", FinetuneConfig(epochs=1, max_length=12, **FAST),
             preset_name="tiny-mlstm")
    err = capsys.readouterr().err
    assert "no test file" in err and "18 of 20 sequences are longer than 12 bases" in err


def test_argument_errors(tmp_path):
    train = write_toy(tmp_path / "train.csv", 20, 0)
    with pytest.raises(ConfigError, match="exactly one"):
        finetune(train, tmp_path / "x", FinetuneConfig(**FAST))
    with pytest.raises(ConfigError, match="'select'"):
        FinetuneConfig(select="auc")
    with pytest.raises(ConfigError, match="'lr'"):
        FinetuneConfig(lr=-1.0)
    finetune(train, tmp_path / "x", FinetuneConfig(epochs=1, **FAST), preset_name="tiny-mlstm")
    with pytest.raises(ConfigError, match="already holds"):
        finetune(train, tmp_path / "x", FinetuneConfig(epochs=1, **FAST), preset_name="tiny-mlstm")


def test_cli_finetune_from_checkpoint_on_bundled_promoters(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    XLSTMLanguageModel(preset("tiny-mlstm")).save_pretrained(ckpt)
    lines = PROMOTERS.read_text().splitlines()
    (tmp_path / "train.csv").write_text("\n".join(lines[:121]) + "\n")
    (tmp_path / "test.csv").write_text("\n".join([lines[0], *lines[3000:3030]]) + "\n")
    assert main(["finetune", "--checkpoint", str(ckpt), "--train", str(tmp_path / "train.csv"),
                 "--test", str(tmp_path / "test.csv"), "--out", str(tmp_path / "out"),
                 "--epochs", "1", "--batch-size", "16", "--select", "mcc", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "test: accuracy" in out and "mcc" in out and "by valid mcc" in out
    assert (tmp_path / "out" / "classifier" / "head.safetensors").is_file()


def test_cli_finetune_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("seq,label\nACGT,0\n")
    assert main(["finetune", "--preset", "tiny-mlstm", "--train", str(bad),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bioxlstm: error:") and "no column 'sequence'" in err and err.count("\n") == 1
    assert main(["finetune", "--checkpoint", str(tmp_path), "--train", str(bad),
                 "--out", str(tmp_path / "o")]) == 2
    assert "config.json" in capsys.readouterr().err


def test_cli_finetune_help(capsys):
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    out = capsys.readouterr().out
    assert "--freeze-backbone" in out and "label=VALUE" in out


def test_rc_conjoined_classifier_is_strand_invariant_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = SequenceClassifier(XLSTMLanguageModel(preset("tiny-mixed", alphabet="dna")), ["0", "1"],
                               64, rc_conjoin=True).eval()
    seqs = [DNA.encode("ACGTTGCAAGT"), DNA.encode("GGGACTTTA")]
    ids, lengths = pad_batch(seqs, DNA)
    rc_ids = reverse_complement_rows(ids, lengths)
    assert rc_ids[0, 0] == DNA.id("[SEP]") and torch.equal(
        rc_ids[1, 1:10], reverse_complement(torch.tensor([seqs[1]]))[0])
    torch.testing.assert_close(model(ids, lengths), model(rc_ids, lengths))
    plain = SequenceClassifier(model.backbone, ["0", "1"], 64).eval()
    plain.head = model.head
    assert not torch.allclose(plain(ids, lengths), plain(rc_ids, lengths))
    model.save_pretrained(tmp_path / "c")
    loaded = load_classifier(tmp_path / "c")
    assert loaded.rc_conjoin and torch.equal(loaded(ids, lengths), model(ids, lengths))
