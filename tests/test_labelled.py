"""Labelled sequences from CSV/TSV/FASTA, their errors, and the seeded stratified hold-out split."""

import gzip

import numpy as np
import pytest

from bioxlstm import datasets
from bioxlstm.alphabets import DNA
from bioxlstm.data.labelled import Columns, LabelledDataError, holdout_split, read_labelled

HUMAN = datasets.path("human_demo_genome").parent


def test_reads_bundled_genomic_benchmarks_csv_gz():
    data = read_labelled(HUMAN / "human_nontata_promoters_test.csv.gz")
    assert len(data) == 9034 and data.classes == ["0", "1"]
    assert {len(t) for t in data.tokens} == {251}
    assert set(data.labels.tolist()) == {0, 1} and data.ids[:2] == ["0", "1"]
    assert DNA.decode(data.tokens[0]).startswith("GTATTCTCCCCTAACAAGACC")


def test_tsv_with_chosen_columns_and_class_names(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("name\tdna\tkind\nr1\tacgt\tpromoter\nr2\tGGCC\tenhancer\nr3\tTTTN\tpromoter\n")
    data = read_labelled(path, columns=Columns("dna", "kind", "name"))
    assert data.classes == ["enhancer", "promoter"] and data.labels.tolist() == [1, 0, 1]
    assert data.ids == ["r1", "r2", "r3"] and DNA.decode(data.tokens[0]) == "ACGT"


def test_integer_labels_sort_numerically_and_accept_integral_floats(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("sequence,label\nAC,10\nGT,2\nAA,2.0\n")
    data = read_labelled(path)
    assert data.classes == ["2", "10"] and data.labels.tolist() == [1, 0, 0]


def test_fasta_labels_in_header_and_test_set_uses_training_classes(tmp_path):
    train = tmp_path / "train.fa.gz"
    with gzip.open(train, "wt") as fh:
        fh.write(">a label=cat\nACG\nTT\n>b extra label=dog\nGG\n")
    data = read_labelled(train)
    assert data.ids == ["a", "b"] and data.classes == ["cat", "dog"]
    assert DNA.decode(data.tokens[0]) == "ACGTT"
    test = tmp_path / "test.fa"
    test.write_text(">c label=dog\nA\n")
    assert read_labelled(test, classes=data.classes).labels.tolist() == [1]
    test.write_text(">c label=dog\nA\n>d label=cow\nC\n")
    with pytest.raises(LabelledDataError, match=r"test.fa, line 3: label 'cow' is not one of"):
        read_labelled(test, classes=data.classes)


def test_nucleotide_transformer_fna_labels_after_the_last_bar(tmp_path):
    path = tmp_path / "train.fna"
    path.write_text(">NM_1|chr1|1\nACGT\n>NM_2|0\nGGTT\n>NM_3|x label=1\nCC\n")
    data = read_labelled(path)
    assert data.ids == ["NM_1|chr1|1", "NM_2|0", "NM_3|x"] and data.labels.tolist() == [1, 0, 1]
    (tmp_path / "two.fna").write_text(">a|1\nACGT\n")
    with pytest.raises(LabelledDataError, match="no 'a=VALUE' field"):
        read_labelled(tmp_path / "two.fna", columns=Columns(targets=("a", "b")))


@pytest.mark.parametrize("text, message", [
    ("seq,label\nAC,1\n", r"line 1: no column 'sequence' in the header \(columns: seq, label\)"),
    ("sequence,label\nAC,1\n,0\n", r"line 3: empty sequence"),
    ("sequence,label\nAC,1\nAXC,0\n", r"line 3, position 2: character 'X'"),
    ("sequence,label\nAC,1\nAG,0.25\n", r"line 3: column 'label' holds '0.25', not a class"),
    ("sequence,label\nAC,1\nAG,1\n", r"only one class \('1'\)"),
    ("sequence,label\nAC,1\nAG,0,7\n", r"line 3: 3 fields, but the header has 2"),
    ("sequence,label\n", r"no records"),
    (">a\nACGT\n", r"line 1: the header has no 'label=VALUE' field .*'>seq1\|1'"),
])
def test_errors_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(LabelledDataError, match=message) as err:
        read_labelled(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(LabelledDataError, match="no such file"):
        read_labelled(tmp_path / "none.csv")


def test_holdout_split_is_stratified_seeded_and_disjoint():
    labels = np.array([0] * 70 + [1] * 30)
    kept, held = holdout_split(labels, 0.1, seed=3)
    assert np.bincount(labels[held]).tolist() == [7, 3]
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(100))
    again = holdout_split(labels, 0.1, seed=3)
    assert np.array_equal(again[1], held)
    assert not np.array_equal(holdout_split(labels, 0.1, seed=4)[1], held)
    with pytest.raises(LabelledDataError, match="too few"):
        holdout_split(np.array([0, 1]), 0.1, seed=0)


def test_missing_labels_are_marked_not_refused(tmp_path):
    """An empty or NA label is a missing target (class id -1), left out of loss and metrics."""
    path = tmp_path / "d.csv"
    path.write_text("sequence,label\nAC,1\nAG,\nGG,0\nTT,NA\n")
    data = read_labelled(path)
    assert data.labels.tolist() == [1, -1, 0, -1] and data.known()[:, 0].tolist() == [1, 0, 1, 0]
