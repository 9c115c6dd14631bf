"""Training curves of a run directory (metrics.jsonl) drawn to one PNG: loss, perplexity, LR."""

from __future__ import annotations

import json
import math
from pathlib import Path

from bioxlstm.errors import BioXLSTMError
from bioxlstm.extras import require
from bioxlstm.io import check_output_file


class RunFileError(BioXLSTMError, ValueError):
    """A run directory has no readable metrics."""


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of run_dir/metrics.jsonl that carry a training loss, in step order."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise RunFileError(f"{path}: no such file; is {run_dir} a run directory?")
    records = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise RunFileError(f"{path}, line {lineno}: not JSON") from None
        if isinstance(record, dict) and "loss" in record and "step" in record:
            records.append(record)
    if not records:
        raise RunFileError(f"{path}: no training records yet")
    return sorted(records, key=lambda r: r["step"])


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw loss (train and validation), perplexity and learning rate against step; returns the PNG."""
    matplotlib = require("matplotlib", "plot", "drawing training curves")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(run_dir)
    out = check_output_file(Path(out) if out is not None else Path(run_dir) / "curves.png", "--out")
    steps = [r["step"] for r in records]
    valid = [r for r in records if "valid_loss" in r]
    fig, (ax_loss, ax_ppl, ax_lr) = plt.subplots(1, 3, figsize=(13, 3.8))
    ax_loss.plot(steps, [r["loss"] for r in records], label="train")
    ax_ppl.plot(steps, [math.exp(min(r["loss"], 50.0)) for r in records], label="train")
    if valid:
        ax_loss.plot([r["step"] for r in valid], [r["valid_loss"] for r in valid], "o-", label="valid")
        ax_ppl.plot([r["step"] for r in valid], [r["valid_ppl"] for r in valid], "o-", label="valid")
    ax_lr.plot(steps, [r.get("lr", math.nan) for r in records], color="tab:gray")
    for ax, title in ((ax_loss, "loss (nats per token)"), (ax_ppl, "perplexity"),
                      (ax_lr, "learning rate")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    ax_loss.legend()
    ax_ppl.legend()
    fig.suptitle(str(run_dir))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
