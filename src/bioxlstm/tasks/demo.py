"""The five-minute tour: train a small DNA-xLSTM on a real genome, compare, save, reload, generate."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from bioxlstm.alphabets import DNA
from bioxlstm.baselines.kmer import KmerModel
from bioxlstm.config import preset
from bioxlstm.data.batches import eval_batches
from bioxlstm.model import XLSTMLanguageModel
from bioxlstm.tasks.pretrain import fasta_tokens, pretrain_fasta, split_tokens
from bioxlstm.train import TrainConfig

DATA = Path(__file__).resolve().parents[3] / "data" / "dna" / "phage_lambda_NC_001416.fa.gz"
SEQ_LEN = 256


def demo_model_config():
    """A small mixed model: three mLSTM blocks around one sLSTM block."""
    return preset("tiny-mixed", d_model=64, num_blocks=4, slstm_at=[1], mlstm_heads=4,
                  slstm_heads=4, chunk_size=32, context_length=SEQ_LEN)


def run_demo(run_dir: str | Path = "runs/demo", steps: int = 300, fasta: str | Path = DATA,
             seed: int = 0) -> dict[str, float]:
    """Pretrain, report validation perplexity next to k-mer baselines, reload, generate."""
    run_dir = Path(run_dir)
    config = demo_model_config()
    train_config = TrainConfig(lr=4e-3, min_lr=4e-4, warmup_fraction=0.1, max_steps=steps,
                               batch_size=16, eval_every=max(steps // 3, 1), eval_batches=8,
                               log_every=10, seed=seed)
    print(f"Training a small DNA-xLSTM on {Path(fasta).name} (run dir: {run_dir})")
    trainer = pretrain_fasta(fasta, config, train_config, run_dir, SEQ_LEN, resume=True)
    print(f"  {trainer.model.num_parameters():,} parameters, {trainer.tokens_seen:,} tokens seen")

    train, valid = split_tokens(fasta_tokens(fasta, DNA), 0.1, SEQ_LEN)
    model = XLSTMLanguageModel.from_pretrained(run_dir / "checkpoint").eval()
    windows = torch.cat([b["input_ids"] for b in eval_batches(valid, SEQ_LEN, 16)])
    xlstm_nll = float(-model.log_likelihood(windows).sum() / (windows.shape[0] * (SEQ_LEN - 1)))
    results = {"xlstm_valid_nll": xlstm_nll}
    print("\nValidation (last 10% of the genome), nats per base and perplexity:")
    print(f"  {'DNA-xLSTM (' + format(model.num_parameters(), ',') + ' params)':<32}"
          f"{xlstm_nll:.4f}  ppl {math.exp(xlstm_nll):.3f}")
    for k in (0, 3, 6):
        nll = KmerModel(k, len(DNA)).fit(train).nll(valid)
        results[f"kmer{k}_valid_nll"] = nll
        print(f"  {f'order-{k} Markov ({k + 1}-mer counts)':<32}{nll:.4f}  ppl {math.exp(nll):.3f}")

    print("\nThree sequences generated from the prompt 'ATG' (T = 0.8, top-k 4):")
    prompt = torch.tensor([[DNA.id("[SEP]"), *DNA.encode("ATG")]] * 3)
    out = model.generate(prompt, 60, temperature=0.8, top_k=4,
                         generator=torch.Generator().manual_seed(seed))
    for row in out:
        print("  " + DNA.decode(row))
    print(f"\nCheckpoint: {run_dir / 'checkpoint'}; metrics: {run_dir / 'metrics.jsonl'}")
    return results
