"""What a fine-tuning run writes and prints: predictions.csv per method, JSON files without NaN,
and the test metrics of the model and its baseline side by side."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from bioxlstm.data.labelled import LabelledData
from bioxlstm.io import atomic_write

TABLE_METRICS = {"classification": ("accuracy", "mcc", "f1", "macro_f1", "auroc"),
                 "multilabel": ("accuracy", "mcc", "f1", "auroc"),
                 "regression": ("spearman", "pearson", "r2", "rmse")}


def write_predictions(path: Path, data: LabelledData, predictions: np.ndarray) -> None:
    """Classification: index, id, label, predicted (class names) and prob_<class> per class.
    Multilabel: index, id, each target and prob_<target>. Regression: index, id, each target and
    pred_<target>. A missing target is an empty field."""
    if data.task == "classification":
        header = ["index", "id", "label", "predicted", *(f"prob_{name}" for name in data.classes)]
    else:
        prefix = "prob" if data.task == "multilabel" else "pred"
        header = ["index", "id", *data.targets, *(f"{prefix}_{name}" for name in data.targets)]

    def row(j: int) -> list[Any]:
        values = [f"{p:.6g}" for p in predictions[j]]
        if data.task == "classification":
            label = data.labels[j]
            return [j, data.ids[j], data.classes[label] if label >= 0 else "",
                    data.classes[int(predictions[j].argmax())], *values]
        known = ["" if math.isnan(v) else f"{v:g}" for v in data.labels[j]]
        return [j, data.ids[j], *known, *values]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(header)
            out.writerows(row(j) for j in range(len(data)))

    atomic_write(path, write)


def finite(value: Any) -> Any:
    """The value with every NaN or infinity (undefined metrics) replaced by None, for JSON."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Strict JSON (undefined metrics as null), written atomically."""
    text = json.dumps(finite(data), indent=2)
    atomic_write(path, lambda p: p.write_text(text))


def metrics_table(task: str, rows: list[tuple[str, dict[str, float]]]) -> str:
    """The test metrics of each (method, metrics) row, one method a line, metrics as columns ('-'
    where a method does not report one or it is undefined)."""
    names = [m for m in TABLE_METRICS[task] if any(m in metrics for _, metrics in rows)]
    width = max(len("method"), *(len(method) for method, _ in rows)) + 2
    lines = ["method".ljust(width) + "".join(f"{m:>10}" for m in names)]
    for method, metrics in rows:
        cells = [metrics.get(m) for m in names]
        lines.append(method.ljust(width) + "".join(
            f"{'-':>10}" if v is None or not math.isfinite(v) else f"{v:>10.4f}" for v in cells))
    return "\n".join(lines)
