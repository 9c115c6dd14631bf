"""Classification and regression metrics, written out so they can be checked: accuracy, MCC, F1, AUROC;
Spearman, Pearson, R2, RMSE; and the same over records with missing targets left out.

Conventions follow scikit-learn: multi-class MCC is Gorodkin's R_K; macro F1 averages the classes that
occur in the true or the predicted labels; an undefined ratio (0/0) counts as 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts C[i, j] of samples with true class i predicted as j."""
    t, p = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length, got {t.shape} and {p.shape}")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Fraction of samples predicted correctly."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    return float((t == p).mean()) if t.size else 0.0


def mcc(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int | None = None) -> float:
    """Matthews correlation coefficient; for more than two classes the R_K generalisation."""
    k = num_classes or int(max(np.max(y_true, initial=0), np.max(y_pred, initial=0))) + 1
    c = confusion_matrix(y_true, y_pred, k).astype(np.float64)
    s, correct = c.sum(), np.trace(c)
    true_counts, pred_counts = c.sum(1), c.sum(0)
    cov_tp = correct * s - pred_counts @ true_counts
    denom = np.sqrt((s**2 - pred_counts @ pred_counts) * (s**2 - true_counts @ true_counts))
    return float(cov_tp / denom) if denom > 0 else 0.0


def f1_per_class(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """F1 = 2TP / (2TP + FP + FN) of each class (0 where the class never occurs)."""
    c = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(c).astype(np.float64)
    denom = c.sum(0) + c.sum(1)
    return np.divide(2 * tp, denom, out=np.zeros(num_classes), where=denom > 0)


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> float:
    """Mean F1 over the classes present in y_true or y_pred."""
    present = np.union1d(np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64))
    if present.size == 0:
        return 0.0
    return float(f1_per_class(y_true, y_pred, num_classes)[present].mean())


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int],
                           num_classes: int) -> dict[str, float]:
    """accuracy, mcc and macro_f1; for two classes also f1 of the positive class (id 1)."""
    out = {"accuracy": accuracy(y_true, y_pred), "mcc": mcc(y_true, y_pred, num_classes),
           "macro_f1": macro_f1(y_true, y_pred, num_classes)}
    if num_classes == 2:
        out["f1"] = float(f1_per_class(y_true, y_pred, 2)[1])
    return out


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks with ties given their average rank (scipy.stats.rankdata's default)."""
    _, inverse, counts = np.unique(np.asarray(values, dtype=np.float64), return_inverse=True,
                                   return_counts=True)
    ends = np.cumsum(counts)
    return ((2 * ends - counts + 1) / 2)[inverse.reshape(-1)]


def auroc(y_true: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve of binary labels (1 = positive) by the rank-sum formula, ties
    counting one half; NaN when only one class is present."""
    t = np.asarray(y_true).astype(bool)
    positives, negatives = int(t.sum()), int((~t).sum())
    if positives == 0 or negatives == 0:
        return math.nan
    rank_sum = average_ranks(scores)[t].sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def macro_auroc(y_true: Sequence[int], probs: np.ndarray) -> float:
    """Binary: AUROC of class 1's probability; more classes: the mean one-vs-rest AUROC over the
    classes that occur (each needs members and non-members); NaN when none can be scored."""
    t, p = np.asarray(y_true, dtype=np.int64), np.asarray(probs, dtype=np.float64)
    if p.shape[1] == 2:
        return auroc(t == 1, p[:, 1])
    values = [auroc(t == k, p[:, k]) for k in range(p.shape[1])]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; NaN when either side is constant or has fewer than two values."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / math.sqrt((a @ a) * (b @ b)))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson of average ranks, as scipy); NaN when undefined."""
    if len(x) < 2:
        return math.nan
    return pearson(average_ranks(x), average_ranks(y))


def r2(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot (sklearn's r2_score); NaN for a constant
    truth."""
    t, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    total = float(((t - t.mean()) ** 2).sum()) if t.size else 0.0
    return 1.0 - float(((t - p) ** 2).sum()) / total if total > 0 else math.nan


def rmse(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    """Root mean squared error; NaN for no values."""
    t, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    return float(np.sqrt(((t - p) ** 2).mean())) if t.size else math.nan


REGRESSION_METRICS = {"spearman": spearman, "pearson": pearson, "r2": r2, "rmse": rmse}
BINARY_METRICS = ("accuracy", "mcc", "f1", "auroc")


def scored_classification(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """classification_metrics plus AUROC (macro one-vs-rest beyond two classes) over the records
    whose label is known (label >= 0; -1 marks a missing label)."""
    labels, probs = np.asarray(labels, dtype=np.int64), np.asarray(probs, dtype=np.float64)
    known = labels >= 0
    out = classification_metrics(labels[known], probs[known].argmax(1), probs.shape[1])
    out["auroc"] = macro_auroc(labels[known], probs[known])
    return out


def scored_columns(targets: np.ndarray, predictions: np.ndarray, names: Sequence[str],
                   multilabel: bool) -> dict[str, float]:
    """Per-target metrics over each column's known values (NaN marks a missing target) and their
    means: multilabel 0/1 targets with probabilities (accuracy at 0.5, MCC, F1, AUROC), or
    regression (Spearman, Pearson, R2, RMSE). One target gives the plain names only."""
    targets, predictions = np.asarray(targets, np.float64), np.asarray(predictions, np.float64)
    per: dict[str, list[float]] = {}
    out: dict[str, float] = {}
    for j, name in enumerate(names):
        known = ~np.isnan(targets[:, j])
        t, p = targets[known, j], predictions[known, j]
        if multilabel:
            y, hard = t.astype(np.int64), (p >= 0.5).astype(np.int64)
            values = {"accuracy": accuracy(y, hard), "mcc": mcc(y, hard, 2),
                      "f1": float(f1_per_class(y, hard, 2)[1]), "auroc": auroc(y, p)}
        else:
            values = {key: fn(t, p) for key, fn in REGRESSION_METRICS.items()}
        for key, value in values.items():
            per.setdefault(key, []).append(value)
            if len(names) > 1:
                out[f"{key}_{name}"] = value
    for key, values in per.items():
        defined = [v for v in values if not math.isnan(v)]
        out[key] = float(np.mean(defined)) if defined else math.nan
    return dict(sorted(out.items(), key=lambda kv: (kv[0] not in per, kv[0])))


def task_metrics(task: str, labels: np.ndarray, predictions: np.ndarray,
                 names: Sequence[str]) -> dict[str, float]:
    """The test metrics of a task: `predictions` are class probabilities (classification), label
    probabilities (multilabel) or values (regression); missing targets are left out."""
    if task == "classification":
        return scored_classification(labels, predictions)
    return scored_columns(labels, predictions, names, task == "multilabel")


LOWER_IS_BETTER = ("rmse",)


def metric_names(task: str, outputs: int) -> tuple[str, ...]:
    """The summary metrics `task_metrics` reports for a task with `outputs` classes or targets."""
    if task == "classification":
        return ("accuracy", "mcc", "macro_f1", *(("f1",) if outputs == 2 else ()), "auroc")
    if task == "multilabel":
        return BINARY_METRICS
    return tuple(REGRESSION_METRICS)
