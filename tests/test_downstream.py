"""Downstream learning beyond binary classification: regression that can fail (R2 > 0.9 on a
learnable target, near 0 on a shuffled one), masked multilabel targets, SMILES inputs, the three
ways to adapt a backbone (LoRA: only adapters and head change, save/load is exact), baselines."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from bioxlstm import XLSTMLanguageModel, preset
from bioxlstm.alphabets import DNA
from bioxlstm.classifier import SequenceClassifier, load_classifier
from bioxlstm.data.labelled import Columns, read_labelled
from bioxlstm.lora import add_lora, base_state_dict, lora_config
from bioxlstm.metrics import r2
from bioxlstm.smiles import SmilesTokenizer
from bioxlstm.tasks.finetune import FinetuneConfig, finetune
from bioxlstm.tasks.finetune_loop import FeatureSource, TokenSource, predict, task_loss
from bioxlstm.tasks.inputs import pad_batch

FAST = dict(batch_size=16, progress=False, device="cpu")
MOLS = ["CCO", "c1ccccc1", "CC(=O)O", "CCN", "CCCl", "OCCO", "c1ccncc1", "CC(C)O", "C#N", "CBr",
        "CCCC", "CC=O", "NCCO", "CCOC", "c1ccoc1", "CCS"]


@pytest.fixture(scope="module")
def dna_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("dna")
    torch.manual_seed(0)
    XLSTMLanguageModel(preset("tiny-mixed")).save_pretrained(path)
    return path


def gc_table(path, n, seed, shuffle=False, missing_every=0):
    """Random DNA of varying GC content; `gc` is the G+C count plus noise of sd 0.3 (a linear
    function of 1-mer, hence of any k-mer, counts), `at` its complement count; shuffle permutes
    both; every `missing_every`-th row leaves `at` empty."""
    rng = np.random.default_rng(seed)
    rows = ["sequence,gc,at"]
    gc_share = rng.uniform(0.2, 0.8, size=n)
    seqs = ["".join(rng.choice(list("ACGT"), size=40, p=[(1 - g) / 2, g / 2, g / 2, (1 - g) / 2]))
            for g in gc_share]
    gc = np.array([s.count("G") + s.count("C") for s in seqs]) + rng.normal(scale=0.3, size=n)
    order = rng.permutation(n) if shuffle else np.arange(n)
    for j, seq in enumerate(seqs):
        at = "" if missing_every and j % missing_every == 0 else f"{40 - gc[order[j]]:.4f}"
        rows.append(f"{seq},{gc[order[j]]:.4f},{at}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_frozen_backbone_mlp_head_regression_fits_and_shuffled_control_does_not(tmp_path, dna_checkpoint):
    test = gc_table(tmp_path / "test.csv", 120, seed=2)
    config = FinetuneConfig(epochs=40, lr=1e-2, adapt="frozen", head="mlp", kmer=3, **FAST)
    columns = Columns(targets=("gc",))
    result = finetune(gc_table(tmp_path / "train.csv", 500, 1), tmp_path / "fit", config, test=test,
                      checkpoint=dna_checkpoint, columns=columns)
    assert result.task == "regression" and result.metrics["r2"] > 0.9
    assert result.baseline["method"] == "3-mer ridge regression" and result.baseline["test"]["r2"] > 0.9
    assert result.parameters["trainable"] < result.parameters["total"] / 5
    control = finetune(gc_table(tmp_path / "shuffled.csv", 500, 1, shuffle=True), tmp_path / "ctl",
                       config, test=test, checkpoint=dna_checkpoint, columns=columns)
    assert -0.3 < control.metrics["r2"] < 0.1 and -0.3 < control.baseline["test"]["r2"] < 0.1
    truth = read_labelled(test, DNA, columns, task="regression").labels[:, 0]
    with open(tmp_path / "fit" / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["index", "id", "gc", "pred_gc"]
    assert r2(truth, [float(r["pred_gc"]) for r in rows]) == pytest.approx(result.metrics["r2"], abs=1e-4)
    model = load_classifier(tmp_path / "fit" / "classifier")
    seqs = [DNA.encode(line.split(",")[0]) for line in test.read_text().splitlines()[1:4]]
    with torch.no_grad():
        again = model.predict(*pad_batch(seqs, DNA))[:, 0].numpy()
    assert again == pytest.approx([float(r["pred_gc"]) for r in rows[:3]], abs=1e-4)


def test_two_targets_with_missing_values_report_each_and_their_mean(tmp_path, dna_checkpoint):
    train = gc_table(tmp_path / "train.csv", 80, 1, missing_every=3)
    result = finetune(train, tmp_path / "o", FinetuneConfig(epochs=1, adapt="frozen", **FAST),
                      checkpoint=dna_checkpoint, columns=Columns(targets=("gc", "at")))
    assert {"r2", "r2_gc", "r2_at", "spearman_at", "rmse_gc"} <= set(result.metrics)
    assert result.metrics["r2"] == pytest.approx((result.metrics["r2_gc"] + result.metrics["r2_at"]) / 2)
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["task"] == "regression" and metrics["baseline"]["test"].keys() == result.metrics.keys()


def test_masked_losses_ignore_missing_targets():
    model = SequenceClassifier(XLSTMLanguageModel(preset("tiny-mlstm")), ["a", "b"], 64, task="multilabel")
    outputs = torch.randn(3, 2, requires_grad=True)
    labels = torch.tensor([[1.0, float("nan")], [0.0, 1.0], [float("nan"), float("nan")]])
    loss = task_loss(model, outputs, labels)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        outputs[[0, 1, 1], [0, 0, 1]], torch.tensor([1.0, 0.0, 1.0]))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert outputs.grad[2].abs().sum() == 0 and outputs.grad[0, 1] == 0
    classes = SequenceClassifier(model.backbone, ["0", "1"], 64)
    none_known = task_loss(classes, outputs, torch.tensor([-1, -1, -1]))
    assert none_known.item() == 0.0 and none_known.requires_grad


def test_multilabel_with_missing_labels_trains_and_writes_probabilities(tmp_path, dna_checkpoint):
    rng = np.random.default_rng(0)
    rows = ["sequence,has_gg,has_tt"]
    for j in range(90):
        seq = "".join(rng.choice(list("ACGT"), size=20))
        tt = "" if j % 5 == 0 else str(int("TT" in seq))
        rows.append(f"{seq},{int('GG' in seq)},{tt}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    result = finetune(tmp_path / "m.csv", tmp_path / "o", FinetuneConfig(epochs=2, baseline="none", **FAST),
                      checkpoint=dna_checkpoint, columns=Columns(targets=("has_gg", "has_tt")))
    assert result.task == "multilabel" and result.select == "auroc" and result.baseline is None
    assert {"accuracy", "mcc", "f1", "auroc", "auroc_has_gg", "f1_has_tt"} <= set(result.metrics)
    with open(tmp_path / "o" / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["index", "id", "has_gg", "has_tt", "prob_has_gg", "prob_has_tt"]
    assert all(0 <= float(r["prob_has_tt"]) <= 1 for r in rows)


def test_smiles_finetuning_with_the_fingerprint_baseline(tmp_path):
    pytest.importorskip("rdkit")
    tokenizer = SmilesTokenizer.build(MOLS)
    ckpt = tmp_path / "chem"
    XLSTMLanguageModel(preset("tiny-chem-xlstm", vocab_size=len(tokenizer))).save_pretrained(ckpt)
    tokenizer.save(ckpt)
    rows = ["smiles,name,active"] + [f"{m},mol{j},{int('O' in m)}" for j, m in enumerate(MOLS * 4)]
    (tmp_path / "mols.csv").write_text("\n".join(rows) + "\n")
    result = finetune(tmp_path / "mols.csv", tmp_path / "o", FinetuneConfig(epochs=2, **FAST),
                      checkpoint=ckpt, columns=Columns(label="active", id="name"))
    assert result.task == "classification" and result.baseline["kind"] == "fingerprint"
    assert result.baseline["method"] == "Morgan fingerprint logistic regression"
    assert 0.0 <= result.metrics["accuracy"] <= 1.0 and result.test_records == 7
    model = load_classifier(tmp_path / "o" / "classifier")
    with torch.no_grad():
        probs = model.predict(*pad_batch([tokenizer.encode("CCO")], tokenizer))
    assert probs.shape == (1, 2)


def test_lora_trains_only_adapters_and_head_and_reloads_exactly(tmp_path, dna_checkpoint):
    train = gc_table(tmp_path / "train.csv", 60, 1)
    config = FinetuneConfig(epochs=2, lr=1e-2, adapt="lora", lora_rank=4, **FAST)
    result = finetune(train, tmp_path / "o", config, checkpoint=dna_checkpoint,
                      columns=Columns(targets=("gc",)))
    before = XLSTMLanguageModel.from_pretrained(dna_checkpoint).state_dict()
    model = load_classifier(tmp_path / "o" / "classifier")
    after = base_state_dict(model.backbone)
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    adapters = {k: v for k, v in model.backbone.state_dict().items() if ".lora_B." in k}
    assert adapters and all(v.abs().sum() > 0 for v in adapters.values())  # B starts at zero
    assert result.parameters["trainable"] == sum(
        v.numel() for k, v in model.backbone.state_dict().items() if ".lora_" in k) + sum(
        p.numel() for p in model.head.parameters())
    seqs = [DNA.encode(line.split(",")[0]) for line in train.read_text().splitlines()[1:6]]
    ids, lengths = pad_batch(seqs, DNA)
    reloaded = load_classifier(tmp_path / "o" / "classifier")
    with torch.no_grad():
        assert torch.equal(model.predict(ids, lengths), reloaded.predict(ids, lengths))
    adapter = json.loads((tmp_path / "o" / "classifier" / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["target_modules"] == ["proj_down", "proj_up"]


def test_lora_update_reaches_the_projections_as_a_merged_weight_would():
    torch.manual_seed(0)
    model = XLSTMLanguageModel(preset("tiny-mixed")).eval()
    merged = XLSTMLanguageModel(preset("tiny-mixed")).eval()
    add_lora(model, lora_config(4, 8.0))
    for name, param in model.named_parameters():
        if ".lora_B." in name:
            torch.nn.init.normal_(param, std=0.3)
    weights = base_state_dict(model)
    for name, module in model.named_modules():
        if hasattr(module, "lora_A"):
            weights[f"{name}.weight"] = module.weight.detach()
    merged.load_state_dict(weights)
    ids = torch.randint(7, 11, (2, 30))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).hidden, merged(ids).hidden)
        assert not torch.allclose(model(ids).hidden, XLSTMLanguageModel(preset("tiny-mixed"))(ids).hidden)


def test_cached_features_give_the_same_predictions_as_the_model(tmp_path):
    torch.manual_seed(0)
    model = SequenceClassifier(XLSTMLanguageModel(preset("tiny-mixed")), ["0", "1"], 64,
                               rc_conjoin=True).eval()
    (tmp_path / "d.csv").write_text("sequence,label\nACGTTGCA,0\nGGGACT,1\nTTAGGCAT,0\n")
    data = read_labelled(tmp_path / "d.csv")
    cached = FeatureSource(model, data, DNA, 2, torch.device("cpu"))
    tokens = TokenSource(data, DNA, torch.device("cpu"))
    np.testing.assert_allclose(predict(model, cached, 3, 2), predict(model, tokens, 3, 2), atol=1e-6)


@pytest.mark.parametrize("module, argv", [
    ("sklearn", []),
    ("peft", ["--adapt", "lora", "--baseline", "none"]),
])
def test_a_missing_downstream_extra_stops_before_training_in_one_line(tmp_path, monkeypatch, capsys,
                                                                      dna_checkpoint, module, argv):
    import sys

    from bioxlstm.cli import main

    train = gc_table(tmp_path / "t.csv", 30, 0)
    for name in [m for m in sys.modules if m == module or m.startswith(f"{module}.")] + [module]:
        monkeypatch.setitem(sys.modules, name, None)
    assert main(["finetune", "--checkpoint", str(dna_checkpoint), "--train", str(train), "--out",
                 str(tmp_path / "o"), "--target-column", "gc", "--device", "cpu", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'bioxlstm[downstream]'" in err and "epoch" not in err


def test_a_preset_trains_from_scratch_so_other_adaptations_are_refused(tmp_path, capsys):
    from bioxlstm.cli import main

    train = gc_table(tmp_path / "t.csv", 30, 0)
    assert main(["finetune", "--preset", "tiny-mlstm", "--train", str(train), "--out", str(tmp_path / "o"),
                 "--adapt", "frozen"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--adapt frozen adapts a pretrained backbone" in err


def test_a_smiles_preset_without_a_vocabulary_says_how_to_get_one(tmp_path, capsys):
    from bioxlstm.cli import main

    train = tmp_path / "m.csv"
    train.write_text("smiles,label\n" + "".join(f"{s},{j % 2}\n" for j, s in
                                                 enumerate(["CCO", "CCN", "c1ccccc1", "CCCl"] * 3)))
    assert main(["finetune", "--preset", "tiny-chem-xlstm", "--train", str(train),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pretrain --smiles" in err and "--from-scratch" in err
