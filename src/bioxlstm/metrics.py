"""Classification metrics (accuracy, MCC, F1) from integer labels, written out so they can be checked.

Conventions follow scikit-learn: multi-class MCC is Gorodkin's R_K; macro F1 averages the classes that
occur in the true or the predicted labels; an undefined ratio (0/0) counts as 0.
"""

from __future__ import annotations

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
