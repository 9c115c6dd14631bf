"""Linear baselines: the features by hand, and fits that can fail: a target linear in k-mer counts
is learnt (R2 > 0.9) and a shuffled copy of it is not (R2 near 0)."""

from __future__ import annotations

import numpy as np
import pytest

from bioxlstm.alphabets import DNA, PROTEIN
from bioxlstm.baselines.features import kmer_counts, morgan_fingerprints, one_hot
from bioxlstm.baselines.linear import BaselineSpec, fit_baseline, resolve_baseline
from bioxlstm.data.labelled import Columns, holdout_split, read_labelled
from bioxlstm.errors import ConfigError
from bioxlstm.smiles import SmilesTokenizer


def kmer_target_table(path, n, seed, weights_seed=0, length=40, shuffle=False):
    """Random DNA whose target `y` is a fixed linear function of its 3-mer counts plus noise of
    sd 0.5 (against a spread of about 5); with shuffle the targets are permuted across rows."""
    weights = np.random.default_rng(weights_seed).normal(size=64)
    rng = np.random.default_rng(seed)
    seqs = ["".join(rng.choice(list("ACGT"), size=length)) for _ in range(n)]
    counts = kmer_counts([np.asarray(DNA.encode(s)) for s in seqs], DNA, 3).toarray()
    y = counts @ weights + rng.normal(scale=0.5, size=n)
    if shuffle:
        y = rng.permutation(y)
    path.write_text("sequence,y\n" + "".join(f"{s},{v:.5f}\n" for s, v in zip(seqs, y)))
    return path


def test_kmer_counts_and_one_hot_by_hand():
    counts = kmer_counts([np.asarray(DNA.encode("ACGTA")), np.asarray(DNA.encode("ANCC"))], DNA, 2)
    assert counts.shape == (2, 16)
    code = {a + b: 4 * "ACGT".index(a) + "ACGT".index(b) for a in "ACGT" for b in "ACGT"}
    assert {j for j in counts[0].indices} == {code[m] for m in ("AC", "CG", "GT", "TA")}
    assert counts[1].indices.tolist() == [code["CC"]]  # windows holding N are not counted
    codes = one_hot([np.asarray(PROTEIN.encode("MK")), np.asarray(PROTEIN.encode("K"))], PROTEIN)
    assert codes.shape == (2, 40) and codes.sum() == 3


def test_morgan_fingerprints_tell_molecules_apart_and_mark_unparsable_ones(capsys):
    pytest.importorskip("rdkit")
    prints = morgan_fingerprints(["CCO", "c1ccccc1", "CCO", "C1CC"]).toarray()
    assert prints.shape == (4, 2048) and (prints[0] == prints[2]).all() and (prints[0] != prints[1]).any()
    assert prints[3].sum() == 0 and "could not parse 1 of 4" in capsys.readouterr().err


def _splits(train_path, test_path):
    columns = Columns(targets=("y",))
    train = read_labelled(train_path, DNA, columns, task="regression")
    test = read_labelled(test_path, DNA, columns, spec=train.spec)
    keep, held = holdout_split(train.labels, 0.1, 1)
    return train.subset(keep), train.subset(held), test


def test_kmer_ridge_fits_a_kmer_linear_target_and_not_its_shuffled_copy(tmp_path):
    from bioxlstm.metrics import r2

    test = kmer_target_table(tmp_path / "test.csv", 200, seed=2)
    fitted = fit_baseline(BaselineSpec("kmer", 3), *_splits(kmer_target_table(tmp_path / "a.csv", 600, 1),
                                                           test), DNA, "r2")
    truth = read_labelled(test, DNA, Columns(targets=("y",)), task="regression").labels[:, 0]
    assert fitted.name == "3-mer ridge regression" and r2(truth, fitted.predictions[:, 0]) > 0.9
    shuffled = kmer_target_table(tmp_path / "s.csv", 600, 1, shuffle=True)
    control = fit_baseline(BaselineSpec("kmer", 3), *_splits(shuffled, test), DNA, "r2")
    assert -0.15 < r2(truth, control.predictions[:, 0]) < 0.1


def test_logistic_baseline_on_classes_and_the_default_per_alphabet(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["sequence,label"]
    for j in range(200):
        probs = [0.1, 0.4, 0.4, 0.1] if j % 2 else [0.4, 0.1, 0.1, 0.4]
        rows.append("".join(rng.choice(list("ACGT"), size=30, p=probs)) + f",{j % 2}")
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    data = read_labelled(tmp_path / "d.csv")
    keep, held = holdout_split(data.labels, 0.2, 0)
    train, test = data.subset(keep), data.subset(held)
    fitted = fit_baseline(resolve_baseline("auto", DNA), train, test, test, DNA, "accuracy")
    assert fitted.name == "4-mer logistic regression" and fitted.predictions.shape == (40, 2)
    assert (fitted.predictions.argmax(1) == test.labels).mean() > 0.85
    assert resolve_baseline("auto", PROTEIN).k == 2 and resolve_baseline("none", DNA) is None


@pytest.mark.parametrize("kind, vocabulary, k, message", [
    ("fingerprint", DNA, None, "--baseline fingerprint needs a SMILES model"),
    ("kmer", SmilesTokenizer.build(["CCO"]), None, "--baseline kmer needs a DNA or protein model"),
    ("onehot", DNA, 3, "--kmer applies to the k-mer baseline"),
    ("none", DNA, 3, "--kmer applies to the k-mer baseline"),
])
def test_baselines_that_do_not_apply_are_refused(kind, vocabulary, k, message):
    with pytest.raises(ConfigError, match=message):
        resolve_baseline(kind, vocabulary, k)
