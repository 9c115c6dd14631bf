"""A small Prot-xLSTM on the bundled families: does homolog context help, and does it score variants?

1. Pretrain a tiny homology-aware model (FIM, per-sequence position ids) on the bundled protein
   families (bioxlstm.datasets "protein_families"), split by family (families.json in the run
   directory).
2. Perplexity of members of the held-out test families as a function of the number of homologs
   in context (0, 1, 10, 100, ...), the same targets and seeded contexts for every count.
3. Fitness Spearman on Pab1 (with the Pfam RRM_1 seed as homologs, and with zero context) and on
   TEM-1 (zero context; its family alignment is not bundled).

Writes results.json and protein_homology.png into --out (and the plot to --plot if given).

    python experiments/protein_homology.py --steps 300 --out runs/protein_homology \
        --plot docs/img/protein_homology.png
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from bioxlstm import datasets
from bioxlstm.config import TrainConfig, preset
from bioxlstm.data.dms import read_assay
from bioxlstm.data.fasta import read_fasta
from bioxlstm.data.msa import read_family, read_msa_dir
from bioxlstm.model import XLSTMLanguageModel
from bioxlstm.run_dir import newest_checkpoint
from bioxlstm.tasks.fitness import FitnessConfig, score_assay
from bioxlstm.tasks.homolog_context import target_log_likelihood
from bioxlstm.tasks.pretrain_msa import pretrain_msa
from bioxlstm.train import seed_everything

DATA = datasets.path("protein_families").parent


def train(out: Path, steps: int, max_tokens: int, d_model: int, blocks: int) -> XLSTMLanguageModel:
    """Pretrain (or reuse a finished run) and return the model."""
    model_config = preset("tiny-mlstm", alphabet="protein", vocab_size=38, rope=True,
                          d_model=d_model, num_blocks=blocks, mlstm_heads=4, chunk_size=64,
                          context_length=max_tokens)
    train_config = TrainConfig(lr=3e-3, warmup_steps=min(50, steps // 5), max_steps=steps,
                               batch_size=2, eval_every=max(steps // 4, 1), eval_batches=4,
                               log_every=10, seed=0, device="cpu")
    run = out / "run"
    found = newest_checkpoint(run)
    if found is None or found[1] < steps:
        pretrain_msa(DATA / "families", model_config, train_config, run, max_tokens,
                     valid_fraction=0.125, test_fraction=0.25, resume=True)
    return XLSTMLanguageModel.from_pretrained(run / "checkpoint").eval()


def context_curve(model: XLSTMLanguageModel, families: list[str], targets: int,
                  sizes: list[int], seed: int = 0) -> dict[str, dict[int, float]]:
    """Per test family: perplexity of `targets` members given n random other members as context."""
    curves = {}
    by_name = {f.name: f for f in read_msa_dir(DATA / "families")}
    for name in families:
        family = by_name[name]
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(family), generator=gen).tolist()
        chosen, pool = order[:targets], order[targets:]
        curve = {}
        for n in sizes:
            if n > len(pool):
                continue
            total, count = 0.0, 0
            for j, t in enumerate(chosen):
                picks = torch.randperm(len(pool), generator=torch.Generator().manual_seed(j))[:n]
                context = [family.sequences[pool[k]] for k in picks.tolist()]
                logp, length = target_log_likelihood(model, context, family.sequences[t])
                total, count = total + logp, count + length
            curve[n] = math.exp(-total / count)
            print(f"  {name}: {n:>4} homologs -> perplexity {curve[n]:.3f}")
        curves[name] = curve
    return curves


def fitness(model: XLSTMLanguageModel) -> dict[str, float]:
    """Spearman on Pab1 with and without homologs, and on TEM-1 without."""
    pab1 = read_assay(DATA / "pab1" / "PABP_YEAST_Fields2013-singles.csv", "log")
    pab1_wt = next(iter(read_fasta(DATA / "pab1" / "PABP_YEAST_wt.fasta")))[1]
    rrm = read_family(DATA / "pab1" / "RRM_1_PF00076_seed.sto.gz")
    tem1 = read_assay(DATA / "tem1" / "BLAT_ECOLX_Ranganathan2015.csv")
    tem1_wt = next(iter(read_fasta(DATA / "tem1" / "BLAT_ECOLX_wt.fasta")))[1]
    runs = {
        "Pab1, 79 RRM homologs": (pab1, pab1_wt, rrm, FitnessConfig(num_homologs=200,
                                                                   first_position=126)),
        "Pab1, zero context": (pab1, pab1_wt, None, FitnessConfig(num_homologs=0, first_position=126)),
        "TEM-1, zero context": (tem1, tem1_wt, None, FitnessConfig(num_homologs=0, first_position=24)),
    }
    out = {}
    for label, (assay, wt, family, config) in runs.items():
        result = score_assay(model, wt, assay.mutants, family, config, assay.scores)
        out[label] = result.spearman
        print(f"  {label}: {result.summary()}")
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, curve in results["context_curve"].items():
        xs = [int(n) for n in curve]
        left.plot([max(x, 0.5) for x in xs], list(curve.values()), marker="o", label=name)
    left.set_xscale("log")
    left.set_xlabel("homologs in context (0 plotted at 0.5)")
    left.set_ylabel("perplexity of held-out members")
    left.set_title("Held-out families")
    left.legend(fontsize=8)
    labels = list(results["fitness_spearman"])
    right.bar(range(len(labels)), [results["fitness_spearman"][k] for k in labels])
    right.set_xticks(range(len(labels)), labels, rotation=15, fontsize=8)
    right.axhline(0, color="black", linewidth=0.8)
    right.set_ylabel("Spearman with measured fitness")
    right.set_title("Variant fitness (FIM query)")
    fig.suptitle(f"Tiny Prot-xLSTM ({results['parameters']:,} parameters, "
                 f"{results['steps']} steps on {results['train_tokens']:,} tokens)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps (default 300)")
    parser.add_argument("--max-tokens", type=int, default=2048, help="tokens per family context")
    parser.add_argument("--d-model", type=int, default=64, help="model width (default 64)")
    parser.add_argument("--blocks", type=int, default=3, help="mLSTM blocks (default 3)")
    parser.add_argument("--targets", type=int, default=8, help="held-out members per family")
    parser.add_argument("--context-sizes", type=int, nargs="+", default=[0, 1, 10, 100],
                        help="homologs in context to measure (default 0 1 10 100)")
    parser.add_argument("--out", default="runs/protein_homology", help="output directory")
    parser.add_argument("--plot", help="also save the plot here (e.g. docs/img/protein_homology.png)")
    args = parser.parse_args()
    seed_everything(0)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    out = Path(args.out)
    began = time.perf_counter()
    model = train(out, args.steps, args.max_tokens, args.d_model, args.blocks)
    train_seconds = time.perf_counter() - began
    split = json.loads((out / "run" / "families.json").read_text())
    state = json.loads((out / "run" / "checkpoint" / "training_state.json").read_text())
    metrics = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    valid = [m for m in metrics if "valid_ppl" in m]
    print(f"trained in {train_seconds:.0f} s; last validation: {valid[-1] if valid else None}")
    print("perplexity vs homologs in context (test families):")
    curves = context_curve(model, split["test"], args.targets, args.context_sizes)
    print("fitness:")
    spearman = fitness(model)
    results = {"parameters": model.num_parameters(), "steps": args.steps,
               "train_tokens": state["tokens_seen"], "train_seconds": train_seconds,
               "split": split, "validation": valid, "context_curve": curves,
               "fitness_spearman": spearman}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, out / "protein_homology.png")
    if args.plot:
        plot(results, Path(args.plot))
    print(f"results: {out / 'results.json'}")


if __name__ == "__main__":
    main()
