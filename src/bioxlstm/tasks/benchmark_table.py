"""A suite's results as one table: mean ± sd over seeds per task and method, as CSV (every metric),
markdown (one metric, the best method per task in bold, a mean row and a count of tasks won) and a
grouped bar chart with sd error bars (matplotlib, the `plot` extra)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bioxlstm.extras import require
from bioxlstm.io import atomic_write
from bioxlstm.metrics import LOWER_IS_BETTER


@dataclass(frozen=True)
class Summary:
    """One task x method x metric: the values over seeds, their mean and sample sd."""

    task: str
    method: str
    metric: str
    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        """Mean of the defined values (NaN when none is)."""
        defined = [v for v in self.values if v is not None and math.isfinite(v)]
        return float(np.mean(defined)) if defined else math.nan

    @property
    def sd(self) -> float:
        """Sample standard deviation (ddof 1) of the defined values; NaN below two."""
        defined = [v for v in self.values if v is not None and math.isfinite(v)]
        return float(np.std(defined, ddof=1)) if len(defined) > 1 else math.nan

    def text(self) -> str:
        """'mean ± sd' with three decimals ('mean' alone for one value, 'n/a' for none)."""
        if math.isnan(self.mean):
            return "n/a"
        return f"{self.mean:.3f}" + ("" if math.isnan(self.sd) else f" ± {self.sd:.3f}")


def summarise(cells: Sequence[dict[str, Any]]) -> list[Summary]:
    """Group finished cells by task, method and metric (in the order they first appear)."""
    groups: dict[tuple[str, str, str], list[float]] = {}
    for cell in sorted(cells, key=lambda c: c["seed"]):
        for metric, value in cell["metrics"].items():
            groups.setdefault((cell["task"], cell["method"], metric), []).append(
                math.nan if value is None else float(value))
    return [Summary(task, method, metric, tuple(values))
            for (task, method, metric), values in groups.items()]


def write_csv(path: Path, summaries: Sequence[Summary]) -> None:
    """task, method, metric, n, mean, sd, values (semicolon-separated, seed order)."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["task", "method", "metric", "n", "mean", "sd", "values"])
            for s in summaries:
                out.writerow([s.task, s.method, s.metric, len(s.values), f"{s.mean:.6g}", f"{s.sd:.6g}",
                              ";".join(f"{v:.6g}" for v in s.values)])
    atomic_write(path, write)


def _by_task(summaries: Sequence[Summary], metric: dict[str, str]) -> dict[tuple[str, str], Summary]:
    """(task, method) -> the summary of that task's table metric."""
    return {(s.task, s.method): s for s in summaries if metric.get(s.task) == s.metric}


def markdown(summaries: Sequence[Summary], metric: dict[str, str], methods: Sequence[str],
             labels: dict[str, str]) -> str:
    """Rows per task, one column per method with mean ± sd of the task's metric; the best mean in
    bold; a mean row when every task has the same metric; how many tasks each method is best on."""
    table = _by_task(summaries, metric)
    tasks = list(metric)
    lines = ["| task | metric | " + " | ".join(labels[m] for m in methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    wins = dict.fromkeys(methods, 0)
    for task in tasks:
        sign = -1.0 if metric[task] in LOWER_IS_BETTER else 1.0
        cells = [table.get((task, m)) for m in methods]
        means = [sign * c.mean if c is not None and not math.isnan(c.mean) else -math.inf for c in cells]
        best = int(np.argmax(means)) if max(means) > -math.inf else -1
        if best >= 0:
            wins[methods[best]] += 1
        texts = [("n/a" if c is None else c.text()) for c in cells]
        lines.append(f"| {task} | {metric[task]} | " + " | ".join(
            f"**{t}**" if j == best else t for j, t in enumerate(texts)) + " |")
    if len(set(metric.values())) == 1:
        overall = [np.nanmean([table[(t, m)].mean for t in tasks if (t, m) in table] or [math.nan])
                   for m in methods]
        lines.append(f"| mean over tasks | {metric[tasks[0]]} | " + " | ".join(f"{v:.3f}" for v in overall)
                     + " |")
    lines.append("")
    lines.append("best on " + ", ".join(f"{wins[m]} of {len(tasks)} tasks: {labels[m]}" for m in methods))
    return "\n".join(lines)


def plot(path: Path, summaries: Sequence[Summary], metric: dict[str, str], methods: Sequence[str],
         labels: dict[str, str], title: str) -> None:
    """Grouped bars per task (labelled with its metric), one per method, with sd error bars."""
    matplotlib = require("matplotlib", "plot", "the benchmark plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = _by_task(summaries, metric)
    tasks = list(metric)
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(tasks) + 2), 3.6))
    for j, method in enumerate(methods):
        cells = [table.get((t, method)) for t in tasks]
        means = [c.mean if c is not None else math.nan for c in cells]
        sds = [0.0 if c is None or math.isnan(c.sd) else c.sd for c in cells]
        ax.bar(np.arange(len(tasks)) + (j - (len(methods) - 1) / 2) * width, means, width, yerr=sds,
               capsize=3, label=labels[method])
    ax.set_xticks(np.arange(len(tasks)), [f"{t}\n({metric[t]})" for t in tasks], fontsize=8)
    ax.set_ylabel(", ".join(dict.fromkeys(metric.values())))
    low = min((table[k].mean for k in table if not math.isnan(table[k].mean)), default=0.0)
    if not set(metric.values()) & set(LOWER_IS_BETTER) and low > 0:
        ax.set_ylim(max(0.0, low - 0.1), None)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=min(3, len(methods)),
              frameon=False)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=130, format="png", bbox_inches="tight"))
    plt.close(fig)
