"""Does a context of molecules from an unseen domain pull generation towards that domain?

The 50 bundled domains (bioxlstm.datasets "icst_domains_50") are split by line: the first
`--train-domains` train a small in-context Chem-xLSTM (rows of one domain's molecules in random
order), the last `--eval-domains` are never seen in training. Each evaluation domain is split in
half: a context pool and a reference half. Per domain, with the same number of molecules each, we
measure the FCD to the reference half of
  - icl:        samples continuing a context drawn from the pool (the in-context model),
  - no-context: samples of the same model from [BEG] alone (stopping at the first '.'),
  - train:      a random subset of the training molecules (no model at all),
  - pool:       the context pool itself (the floor: the domain against itself).
Writes results JSON and a bar plot.

    python experiments/chem_icl.py --steps 400 --out runs/chem_icl
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from bioxlstm import datasets
from bioxlstm.config import TrainConfig, preset
from bioxlstm.data.smiles import read_domains, valid_smiles
from bioxlstm.molecule_metrics import canonical_set, molecule_metrics
from bioxlstm.run_dir import newest_checkpoint
from bioxlstm.tasks.molecule_generation import GenerationConfig, read_context, sample_smiles
from bioxlstm.tasks.pretrain_smiles import SmilesData, load_smiles_model, pretrain_smiles
from bioxlstm.train import seed_everything

DOMAINS = datasets.path("icst_domains_50")
CONDITIONS = ("icl", "no-context", "train", "pool")


def train_model(args: argparse.Namespace, train_domains: list[list[str]]) -> Path:
    """Train (or reuse) the in-context model on the training domains; returns its checkpoint."""
    run = args.out / "model"
    found = newest_checkpoint(run)
    if found is None or found[1] < args.steps:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "train_domains.txt"
        path.write_text("".join(".".join(d) + "\n" for d in train_domains))
        model_config = preset("tiny-mlstm", d_model=args.d_model, num_blocks=args.blocks,
                              context_length=args.context, chunk_size=64)
        train_config = TrainConfig(lr=args.lr, min_lr=args.lr / 10, warmup_fraction=0.05,
                                   max_steps=args.steps, batch_size=args.batch_size,
                                   eval_every=max(1, args.steps // 5), eval_batches=4,
                                   log_every=20, seed=args.seed, device="cpu")
        pretrain_smiles(SmilesData(path, in_context=True, seed=args.seed), model_config,
                        train_config, run, resume=True)
    return run / "checkpoint"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/chem_icl"), help="output directory")
    parser.add_argument("--train-domains", type=int, default=40, help="domains used for training")
    parser.add_argument("--eval-domains", type=int, default=5, help="unseen domains evaluated")
    parser.add_argument("--steps", type=int, default=400, help="optimiser steps")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per step")
    parser.add_argument("--context", type=int, default=512, help="tokens per training row")
    parser.add_argument("--d-model", type=int, default=64, help="model width")
    parser.add_argument("--blocks", type=int, default=2, help="mLSTM blocks")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument("--samples", type=int, default=200, help="molecules per condition and domain")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    domains = [valid_smiles(d)[0] for d in read_domains(DOMAINS)]
    train_domains = domains[: args.train_domains]
    eval_domains = domains[len(domains) - args.eval_domains:]
    start = time.perf_counter()
    checkpoint = train_model(args, train_domains)
    train_seconds = time.perf_counter() - start
    model, tokenizer = load_smiles_model(checkpoint)
    training_molecules = [m for d in train_domains for m in d]
    train_set = canonical_set(training_molecules)
    rng = random.Random(args.seed)
    results = []
    for j, domain in enumerate(eval_domains):
        mols = domain[:]
        rng.shuffle(mols)
        pool, reference = mols[: len(mols) // 2], mols[len(mols) // 2:]
        pool_file = args.out / f"domain{j}_pool.smi"
        pool_file.write_text("".join(m + "\n" for m in pool))
        context = read_context(pool_file, tokenizer)
        config = GenerationConfig(num_samples=args.samples, batch_size=50, max_tokens=120,
                                  seed=args.seed + j, progress=False)
        sets = {"icl": sample_smiles(model, tokenizer, config, context),
                "no-context": sample_smiles(model, tokenizer, config),  # ends at '.', as trained
                "train": rng.sample(training_molecules, args.samples),
                "pool": pool[: args.samples]}
        row = {"domain_line": len(domains) - args.eval_domains + j + 1, "molecules": len(domain),
               "context_pool": len(context.smiles)}
        for name, smiles in sets.items():
            metrics = molecule_metrics(smiles, reference)
            unique = canonical_set(smiles)
            row[name] = {k: metrics[k] for k in ("fcd", "validity", "uniqueness", "novelty_reference")}
            row[name]["novelty_train"] = len(unique - train_set) / len(unique) if unique else 0.0
        results.append(row)
        print(json.dumps(row))
    summary = {name: float(np.nanmean([_fcd(r, name) for r in results])) for name in CONDITIONS}
    out = {"args": {k: str(v) for k, v in vars(args).items()}, "train_seconds": train_seconds,
           "parameters": model.num_parameters(), "train_molecules": len(train_set),
           "mean_fcd": summary, "domains": results}
    (args.out / "results.json").write_text(json.dumps(out, indent=2))
    plot(results, args.out / "chem_icl.png")
    print(json.dumps(summary))


def _fcd(row: dict, name: str) -> float:
    """A condition's FCD, NaN where too few valid molecules were drawn to compute one."""
    value = row[name]["fcd"]
    return float("nan") if value is None else value


def plot(results: list[dict], path: Path) -> None:
    """Grouped bars: FCD to each unseen domain's reference half, per condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4))
    width = 0.2
    for k, name in enumerate(CONDITIONS):
        xs = [j + (k - 1.5) * width for j in range(len(results))]
        ax.bar(xs, [_fcd(r, name) for r in results], width, label=name)
    ax.set_xticks(range(len(results)), [f"domain {r['domain_line']}" for r in results])
    ax.set_ylabel("FCD to unseen domain (lower is closer)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
