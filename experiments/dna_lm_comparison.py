"""Causal DNA-xLSTM vs a causal Transformer on the bundled human genome, same tokens, similar size.

Every model trains on the same random windows of the train intervals (same seed) and is
validated on the held-out chromosome-22 intervals. Writes per-run metrics, a JSON summary and
a plot of validation loss against tokens seen. Running it again continues unfinished runs and
reuses finished ones.

    python experiments/dna_lm_comparison.py --steps 300 --out runs/dna_lm_comparison
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from bioxlstm import datasets
from bioxlstm.baselines.transformer import TransformerLanguageModel, transformer_like
from bioxlstm.config import preset
from bioxlstm.data.genome_windows import GenomeWindows, WindowConfig, genome_eval_batches
from bioxlstm.model import XLSTMLanguageModel
from bioxlstm.tasks.pretrain import GenomeData
from bioxlstm.train import TrainConfig, Trainer, seed_everything

DATA = datasets.path("human_demo_genome").parent
GENOME = GenomeData(DATA / "human_demo_genome.fa.bgz", DATA / "human_demo_intervals.bed")


def build(name: str, seq_len: int) -> nn.Module:
    """The compared models, all near 0.5M parameters."""
    if name == "xlstm-slstm":
        return XLSTMLanguageModel(preset("dna-xlstm-500k", context_length=seq_len))
    if name == "xlstm-mlstm":
        return XLSTMLanguageModel(preset("dna-xlstm-4m", d_model=128, num_blocks=5,
                                         context_length=seq_len))
    if name == "transformer":
        return TransformerLanguageModel(transformer_like(544_384, 12, seq_len, d_model=128))
    raise SystemExit(f"unknown model {name!r}")


def run(name: str, lr: float, args: argparse.Namespace) -> dict:
    """Train one model at one learning rate; return its validation curve."""
    run_dir = args.out / f"{name}_lr{lr:g}"
    seed_everything(args.seed)
    model = build(name, args.seq_len)
    windows = WindowConfig(args.seq_len, args.batch_size, "clm", rc_prob=0.5)
    genome, intervals = GENOME.load()
    source = GenomeWindows(genome, intervals, windows, "train", seed=args.seed)
    config = TrainConfig(lr=lr, min_lr=lr / 10, warmup_fraction=0.1, max_steps=args.steps,
                         batch_size=args.batch_size, eval_every=args.eval_every,
                         eval_batches=10_000, log_every=args.eval_every, seed=args.seed,
                         progress=True)
    valid = lambda: genome_eval_batches(genome, intervals, windows, "valid", seed=args.seed)  # noqa: E731
    start = time.perf_counter()
    resume = (run_dir / "checkpoint").is_dir()  # a finished or interrupted run continues
    Trainer(model, config, source, run_dir, valid, resume=resume).train()
    seconds = time.perf_counter() - start
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    curve = [(r["step"] * args.batch_size * args.seq_len, r["valid_loss"])
             for r in records if "valid_loss" in r]
    params = sum(p.numel() for p in model.parameters())
    tokens_per_s = [r["tokens_per_s"] for r in records if "tokens_per_s" in r]
    print(f"{name} lr {lr:g}: {params:,} params, final valid loss {curve[-1][1]:.4f} "
          f"({seconds:.0f} s this call)")
    return {"model": name, "lr": lr, "params": params, "curve": curve,
            "median_tokens_per_s": sorted(tokens_per_s)[len(tokens_per_s) // 2]}


def plot(results: list[dict], path: Path) -> None:
    """Validation loss vs tokens for every run; the best learning rate per model drawn solid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = {}
    for r in results:
        if r["model"] not in best or r["curve"][-1][1] < best[r["model"]]["curve"][-1][1]:
            best[r["model"]] = r
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {"xlstm-slstm": "tab:blue", "xlstm-mlstm": "tab:green", "transformer": "tab:red"}
    for r in results:
        tokens, loss = zip(*r["curve"])
        solid = best[r["model"]] is r
        ax.plot([t / 1e6 for t in tokens], loss, color=colors.get(r["model"]),
                linestyle="-" if solid else ":", alpha=1.0 if solid else 0.6,
                label=f"{r['model']} ({r['params'] / 1e6:.2f}M) lr {r['lr']:g}")
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("validation loss (nats per base)")
    ax.set_title("Causal LM on human DNA (held-out chr22 window)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["xlstm-slstm", "xlstm-mlstm", "transformer"])
    parser.add_argument("--lrs", nargs="+", type=float, default=[2e-3, 8e-3])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--out", type=Path, default=Path("runs/dna_lm_comparison"))
    parser.add_argument("--plot", type=Path, default=Path("docs/img/dna_lm_comparison.png"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = [run(name, lr, args) for name in args.models for lr in args.lrs]
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"args": {k: str(v) for k, v in vars(args).items()}, "results": results,
               "torch": torch.__version__}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    plot(results, args.plot)
    print(f"summary: {args.out / 'summary.json'}; plot: {args.plot}")


if __name__ == "__main__":
    main()
