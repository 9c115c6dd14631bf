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


def test_auroc_and_regression_metrics_match_sklearn_and_scipy():
    from scipy import stats
    from sklearn.metrics import r2_score, roc_auc_score

    from bioxlstm.metrics import auroc, average_ranks, macro_auroc, pearson, r2, rmse, spearman

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 80).astype(float), rng.normal(size=80)  # x has ties
    assert average_ranks(x) == pytest.approx(stats.rankdata(x))
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic)
    assert r2(y, y + 0.3 * x) == pytest.approx(r2_score(y, y + 0.3 * x))
    assert rmse([1, 2], [1, 4]) == pytest.approx(math.sqrt(2))
    labels, scores = rng.integers(0, 2, 80), np.round(rng.random(80), 1)  # tied scores
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    classes, probs = rng.integers(0, 3, 80), rng.dirichlet([1, 1, 1], 80)
    assert macro_auroc(classes, probs) == pytest.approx(roc_auc_score(classes, probs, multi_class="ovr"))
    assert math.isnan(auroc([1, 1], [0.2, 0.3])) and math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_missing_targets_are_left_out_per_column():
    from bioxlstm.metrics import scored_classification, scored_columns

    nan = math.nan
    targets = np.array([[1.0, 0.0], [2.0, nan], [3.0, 1.0], [nan, 1.0]])
    preds = np.array([[1.0, 0.1], [2.0, 99.0], [3.0, 0.9], [99.0, 0.9]])
    values = scored_columns(targets, preds, ["a", "b"], multilabel=False)
    assert values["r2_a"] == 1.0 and values["rmse_a"] == 0.0 and values["spearman_b"] == 1.0
    assert values["rmse"] == pytest.approx((0 + values["rmse_b"]) / 2)
    labels = scored_columns(np.array([[1.0], [0.0], [nan]]), np.array([[0.9], [0.2], [0.99]]), ["x"], True)
    assert labels == {"accuracy": 1.0, "mcc": 1.0, "f1": 1.0, "auroc": 1.0}
    scores = scored_classification(np.array([1, -1, 0]), np.array([[0.2, 0.8], [0.9, 0.1], [0.6, 0.4]]))
    assert scores["accuracy"] == 1.0 and scores["auroc"] == 1.0
