"""The tour on real human DNA: pretrain, compare with k-mer baselines, fine-tune, generate.

Pretraining windows come from the bundled human sample (chromosomes 5, 6, 11, 16, ... for training,
a held-out chromosome-22 window for validation); fine-tuning uses the bundled Genomic Benchmarks
human_nontata_promoters rows, split by the demo itself into train and test.
"""

from __future__ import annotations

import csv
import gzip
import math
import random
import shutil
from pathlib import Path

import torch

from bioxlstm import datasets
from bioxlstm.alphabets import DNA, encode_dna
from bioxlstm.baselines.kmer import KmerModel
from bioxlstm.config import ModelConfig, preset
from bioxlstm.data.genome import Genome
from bioxlstm.data.genome_windows import WindowConfig, genome_eval_batches
from bioxlstm.data.intervals import Interval, select_split
from bioxlstm.model import XLSTMLanguageModel
from bioxlstm.tasks.finetune import FinetuneConfig, finetune
from bioxlstm.tasks.pretrain import GenomeData, pretrain_genome
from bioxlstm.train import TrainConfig

GENOME = GenomeData(datasets.path("human_demo_genome"), datasets.path("human_demo_intervals"))
PROMOTERS = datasets.path("human_nontata_promoters")
SEQ_LEN = 257  # [SEP] + 256 bases
BASES = [DNA.id(b) for b in "ACGT"]  # what the k-mer baselines model (N is skipped)
BATCH = 16


def demo_model_config() -> ModelConfig:
    """A small mixed model: three mLSTM blocks around one sLSTM block."""
    return preset("tiny-mixed", d_model=64, num_blocks=4, slstm_at=[1], mlstm_heads=4,
                  slstm_heads=4, chunk_size=32, context_length=SEQ_LEN, alphabet="dna")


def promoter_split(out_dir: Path, train_rows: int, test_rows: int, seed: int) -> tuple[Path, Path]:
    """Seeded disjoint train/test CSVs drawn from the bundled promoter rows."""
    with gzip.open(PROMOTERS, "rt", newline="") as fh:
        rows = list(csv.DictReader(fh))
    random.Random(seed).shuffle(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, part in (("train", rows[:train_rows]), ("test", rows[train_rows:train_rows + test_rows])):
        path = out_dir / f"promoters_{name}.csv"
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["sequence", "label"])
            writer.writeheader()
            writer.writerows(part)
        paths.append(path)
    return paths[0], paths[1]


def _split_tokens(genome: Genome, intervals: list[Interval], split: str) -> torch.Tensor:
    """All bases of one split's intervals, concatenated (for the k-mer baselines)."""
    return torch.cat([encode_dna(genome.fetch(iv.chrom, iv.start, iv.end))
                      for iv in select_split(intervals, split)])


@torch.no_grad()
def _valid_nll(model: XLSTMLanguageModel, windows: WindowConfig, genome: Genome,
               intervals: list[Interval]) -> float:
    """Mean next-base loss over every validation window (nats per base)."""
    total, count = 0.0, 0
    for batch in genome_eval_batches(genome, intervals, windows, "valid"):
        n = int((batch["labels"][:, 1:] != -100).sum())
        total += float(model.loss(**batch)) * n
        count += n
    return total / count


def _prepare_kernels() -> None:
    """Build (or load) the CPU kernels first, saying so: the first run compiles them for minutes."""
    from bioxlstm.layers.cpu_kernels import KERNELS, build_cpu_kernels

    print(f"0. Loading the {len(KERNELS)} CPU kernels (compiled on the first run only, 25-60 s each)",
          flush=True)
    ready = build_cpu_kernels()
    print(f"   {sum(ready.values())} of {len(ready)} ready\n", flush=True)


def _majority_share(path: Path) -> float:
    """The share of the commonest label in a labelled CSV: the accuracy of always guessing it."""
    with open(path, newline="") as fh:
        labels = [row["label"] for row in csv.DictReader(fh)]
    return max(labels.count(label) for label in set(labels)) / len(labels)


def run_demo(run_dir: str | Path = "runs/demo", steps: int = 300, seed: int = 0,
             finetune_rows: tuple[int, int] = (2000, 1000), epochs: int = 2) -> dict[str, float]:
    """Pretrain, report validation perplexity next to k-mer baselines, fine-tune, generate."""
    run_dir = Path(run_dir)
    windows = WindowConfig(SEQ_LEN, BATCH, "clm", rc_prob=0.5)
    train_config = TrainConfig(lr=8e-3, min_lr=8e-4, warmup_fraction=0.1, max_steps=steps,
                               batch_size=BATCH, eval_every=max(steps // 3, 1), eval_batches=8,
                               log_every=10, seed=seed)
    _prepare_kernels()
    print(f"1. Pretraining a small DNA-xLSTM (causal LM) on human DNA: {GENOME.genome.name}, "
          f"train intervals of {GENOME.intervals.name}")
    trainer = pretrain_genome(GENOME, demo_model_config(), train_config, run_dir / "pretrain",
                              windows, resume=True)
    print(f"   {trainer.model.num_parameters():,} parameters, {trainer.tokens_seen:,} tokens seen")

    checkpoint = run_dir / "pretrain" / "checkpoint"
    model = XLSTMLanguageModel.from_pretrained(checkpoint).eval()
    genome, intervals = GENOME.load()
    results = {"xlstm_valid_nll": _valid_nll(model, windows, genome, intervals)}
    print("\n2. Validation on every window of the held-out chromosome-22 window, nats per base and "
          "perplexity\n   (metrics.jsonl's valid_loss averages only the first 8 batches, so it differs "
          "a little):")
    label = f"DNA-xLSTM ({model.num_parameters():,} params)"
    print(f"   {label:<34}{results['xlstm_valid_nll']:.4f}  ppl {math.exp(results['xlstm_valid_nll']):.3f}")
    train_tokens = _split_tokens(genome, intervals, "train")
    valid_tokens = _split_tokens(genome, intervals, "valid")
    for k in (0, 3, 6):
        nll = KmerModel(k, BASES).fit(train_tokens).nll(valid_tokens)
        results[f"kmer{k}_valid_nll"] = nll
        print(f"   {f'order-{k} Markov ({k + 1}-mer counts)':<34}{nll:.4f}  ppl {math.exp(nll):.3f}")

    print(f"\n3. Fine-tuning on Genomic Benchmarks human_nontata_promoters ({finetune_rows[0]:,} "
          f"train / {finetune_rows[1]:,} test rows drawn from the bundled split)")
    train_csv, test_csv = promoter_split(run_dir / "promoters", *finetune_rows, seed)
    shutil.rmtree(run_dir / "finetune", ignore_errors=True)  # the demo redoes its fine-tuning
    result = finetune(train_csv, run_dir / "finetune",
                      FinetuneConfig(epochs=epochs, lr=2e-3, seed=seed, baseline="none"),
                      test=test_csv, checkpoint=checkpoint)
    for name in ("accuracy", "mcc", "f1"):
        results[f"finetune_test_{name}"] = result.metrics[name]
    chance = _majority_share(test_csv)
    print(f"   test accuracy {result.metrics['accuracy']:.3f} (always guessing the commonest class: "
          f"{chance:.3f}), MCC {result.metrics['mcc']:.3f}, F1 {result.metrics['f1']:.3f} (best "
          f"epoch {result.best_epoch})")

    print("\n4. Three sequences generated from the prompt 'ATG' (T = 0.8, top-k 4):")
    prompt = torch.tensor([[DNA.id("[SEP]"), *DNA.encode("ATG")]] * 3)
    out = model.generate(prompt, 60, temperature=0.8, top_k=4,
                         generator=torch.Generator().manual_seed(seed))
    for row in out:
        print("   " + DNA.decode(row))
    print(f"\nFiles: pretraining run {run_dir / 'pretrain'} (checkpoint/, metrics.jsonl, run.json; "
          f"`bioxlstm plot {run_dir / 'pretrain'}` draws its curves); fine-tuning "
          f"{run_dir / 'finetune'} (classifier/, predictions.csv, metrics.json)")
    return results
