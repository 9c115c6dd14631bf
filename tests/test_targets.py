"""What labelled tables' targets mean: the task `auto` chooses, explicit tasks, multilabel and
regression columns, missing values, and SMILES tables read with a SMILES vocabulary."""

import math

import numpy as np
import pytest

from bioxlstm.data.labelled import Columns, LabelledDataError, holdout_split, read_labelled
from bioxlstm.smiles import SmilesTokenizer


def _table(tmp_path, text, name="d.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("values, targets, task", [
    (["1", "0", "1"], ("label",), "classification"),
    (["cat", "dog", "cat"], ("label",), "classification"),
    (["0.5", "1.25", "3"], ("label",), "regression"),
    ([str(j) for j in range(12)], ("label",), "regression"),  # many integer levels
    (["1;0", "0;1", "1;1"], ("a", "b"), "multilabel"),
    (["1;2.5", "0;1", "1;0"], ("a", "b"), "regression"),
])
def test_auto_chooses_the_task_from_the_values(tmp_path, values, targets, task):
    header = "sequence," + ",".join(targets)
    rows = [f"ACGT,{v.replace(';', ',')}" for v in values]
    path = _table(tmp_path, "\n".join([header, *rows]) + "\n")
    data = read_labelled(path, columns=Columns(targets=targets), task="auto")
    assert data.task == task and data.spec.reason.startswith("auto:")
    assert data.spec.describe().startswith(f"task: {task}")


def test_regression_and_multilabel_columns_keep_missing_values_as_nan(tmp_path):
    path = _table(tmp_path, "sequence,y,z\nAC,1.5,\nGT,NA,2\nAA,-3,0.25\n")
    data = read_labelled(path, columns=Columns(targets=("y", "z")), task="regression")
    assert data.classes == ["y", "z"] and data.labels.shape == (3, 2)
    assert np.isnan(data.labels[0, 1]) and np.isnan(data.labels[1, 0]) and data.labels[2, 1] == 0.25
    assert data.known().sum(0).tolist() == [2, 2]
    multi = _table(tmp_path, "sequence,a,b\nAC,1,\nGT,0,1\nAA,1,0\n", "m.csv")
    labels = read_labelled(multi, columns=Columns(targets=("a", "b")), task="auto")
    assert labels.task == "multilabel" and labels.known().sum() == 5
    kept, held = holdout_split(labels.labels, 0.34, seed=0)  # 2-D targets: a plain random split
    assert len(held) == 1 and len(kept) == 2


@pytest.mark.parametrize("text, targets, task, message", [
    ("sequence,y\nAC,1\nAG,x\n", ("y",), "regression", r"line 3: column 'y' holds 'x', not a finite number"),
    ("sequence,a,b\nAC,1,2\nAG,0,1\n", ("a", "b"), "multilabel", r"line 2: column 'b' holds '2', not 0 or 1"),
    ("sequence,a,b\nAC,1,x\nAG,0,y\n", ("a", "b"), "auto", r"column 'b' holds text"),
    ("sequence,a,b\nAC,1,1\nAG,0,0\n", ("a", "b"), "classification", r"classification reads one target"),
    ("sequence,y\nAC,\nAG,NA\n", ("y",), "auto", r"column 'y' holds no target values"),
])
def test_values_that_do_not_fit_the_task_are_refused_with_file_and_line(tmp_path, text, targets,
                                                                         task, message):
    path = _table(tmp_path, text)
    with pytest.raises(LabelledDataError, match=message) as err:
        read_labelled(path, columns=Columns(targets=targets), task=task)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_test_set_is_read_with_the_training_spec(tmp_path):
    train = read_labelled(_table(tmp_path, "sequence,y\nAC,0.5\nAG,1.5\n"), task="auto",
                          columns=Columns(targets=("y",)))
    test = read_labelled(_table(tmp_path, "sequence,y\nTT,7\n", "t.csv"), spec=train.spec,
                         columns=Columns(targets=("y",)))
    assert test.task == "regression" and test.labels.tolist() == [[7.0]]


def test_fasta_targets_in_the_header_missing_ones_marked(tmp_path):
    path = _table(tmp_path, ">a y=1.5 z=2\nACG\n>b z=3\nTT\n", "d.fa")
    data = read_labelled(path, columns=Columns(targets=("y", "z")), task="regression")
    assert math.isnan(data.labels[1, 0]) and data.labels[1, 1] == 3.0 and data.ids == ["a", "b"]


def test_smiles_tables_use_the_smiles_column_and_refuse_unknown_tokens(tmp_path):
    tokenizer = SmilesTokenizer.build(["CCO", "c1ccccc1", "CCN"])
    data = read_labelled(_table(tmp_path, "smiles,logp\nCCO,-0.1\nc1ccccc1,2.1\nCCN,0.2\n"), tokenizer,
                         columns=Columns(targets=("logp",)), task="auto")
    assert data.task == "regression" and data.texts[1] == "c1ccccc1"
    assert tokenizer.decode(data.tokens[1]) == "c1ccccc1"
    with pytest.raises(LabelledDataError, match=r"line 2: SMILES 'CCBr' has tokens outside .*Br"):
        read_labelled(_table(tmp_path, "smiles,label\nCCBr,1\nCCO,0\n", "b.csv"), tokenizer)
