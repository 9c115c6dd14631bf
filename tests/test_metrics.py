"""Classification metrics against values worked out by hand."""

import math

import numpy as np
import pytest

from bioxlstm.metrics import accuracy, classification_metrics, confusion_matrix, f1_per_class, macro_f1, mcc


def test_binary_metrics_by_hand():
    # TP=1 FN=1 FP=1 TN=3
    y_true = [0, 0, 0, 0, 1, 1]
    y_pred = [0, 0, 0, 1, 1, 0]
    assert accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    assert mcc(y_true, y_pred) == pytest.approx((1 * 3 - 1 * 1) / math.sqrt(2 * 2 * 4 * 4))
    assert f1_per_class(y_true, y_pred, 2) == pytest.approx([6 / 8, 2 / 4])
    assert classification_metrics(y_true, y_pred, 2) == pytest.approx(
        {"accuracy": 4 / 6, "mcc": 0.25, "macro_f1": (0.75 + 0.5) / 2, "f1": 0.5})


def test_multiclass_metrics_by_hand():
    y_true = [0, 1, 2, 0, 1, 2]
    y_pred = [0, 2, 1, 0, 0, 2]
    assert confusion_matrix(y_true, y_pred, 3).tolist() == [[2, 0, 0], [1, 0, 1], [0, 1, 1]]
    # trace 3, total 6, true counts (2, 2, 2), predicted counts (3, 1, 2)
    expected_mcc = (3 * 6 - (3 * 2 + 1 * 2 + 2 * 2)) / math.sqrt((36 - 14) * (36 - 12))
    assert mcc(y_true, y_pred, 3) == pytest.approx(expected_mcc)
    assert f1_per_class(y_true, y_pred, 3) == pytest.approx([0.8, 0.0, 0.5])
    assert macro_f1(y_true, y_pred, 3) == pytest.approx(1.3 / 3)
    assert "f1" not in classification_metrics(y_true, y_pred, 3)


def test_extreme_and_degenerate_cases():
    y = np.array([0, 1, 1, 0, 1])
    assert mcc(y, y) == pytest.approx(1.0) and mcc(y, 1 - y) == pytest.approx(-1.0)
    assert mcc(y, np.ones_like(y)) == 0.0  # constant prediction: 0/0 counts as 0
    assert macro_f1([1, 1], [1, 1], 3) == 1.0  # absent classes are not averaged
    with pytest.raises(ValueError):
        confusion_matrix([0, 3], [0, 1], 3)
