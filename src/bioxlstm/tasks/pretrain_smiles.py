"""Chem-xLSTM pretraining: causal LM on molecules ([BEG] smiles [END]) or on in-context domain rows.

Invalid SMILES (RDKit) and molecules longer than the context are counted and skipped, with a
summary on standard error. The vocabulary is learned from the file and written as tokenizer.json
into the run directory and into every checkpoint beside the weights (a resumed run reads the
checkpoint's).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from bioxlstm.config import ModelConfig, TrainConfig
from bioxlstm.data.smiles import ValiditySummary, read_domains, read_smiles, valid_smiles
from bioxlstm.data.smiles_batches import (
    DomainContexts,
    MoleculeBatches,
    domain_eval_batches,
    molecule_eval_batches,
)
from bioxlstm.errors import CheckpointError, ConfigError
from bioxlstm.model import XLSTMLanguageModel
from bioxlstm.run_dir import newest_checkpoint
from bioxlstm.smiles import TOKENIZER_FILE, SmilesTokenizer
from bioxlstm.train import Trainer


def report(line: str) -> None:
    """A one-line progress note on standard error (summaries of what was skipped)."""
    print(line, file=sys.stderr)


@dataclass(frozen=True)
class SmilesData:
    """Where SMILES pretraining data comes from.

    path: molecules one per line (.smi/.txt/.csv, gzip allowed) or, with in_context, domains one per
    line ('.'-joined). valid_fraction of the molecules (in_context: of the domains, so validation
    domains are unseen) is held out, chosen with `seed`.
    """

    path: str | Path
    in_context: bool = False
    valid_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.valid_fraction < 1.0:
            raise ConfigError(f"'valid_fraction' must be in (0, 1), got {self.valid_fraction}")


def encode_fitting(tokenizer: SmilesTokenizer, smiles: Sequence[str], max_tokens: int
                   ) -> tuple[list[list[int]], int]:
    """Ids of molecules of at most max_tokens tokens ([UNK] for unknown ones), and how many were longer."""
    encoded = [tokenizer.encode(s, strict=False) for s in smiles]
    kept = [ids for ids in encoded if len(ids) <= max_tokens]
    return kept, len(encoded) - len(kept)


def _split(items: list, fraction: float, seed: int, what: str) -> tuple[list, list]:
    """A seeded random (train, valid) split with at least one item on each side."""
    n_valid = round(len(items) * fraction)
    if len(items) < 2 or n_valid < 1 or n_valid >= len(items):
        needed = next(n for n in range(2, 10**9) if 1 <= round(n * fraction) < n)
        raise ConfigError(f"{len(items)} {what} cannot be split with valid_fraction={fraction}: "
                          f"that needs at least {needed} {what} (or a larger --valid-fraction)")
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    return [items[j] for j in order[n_valid:]], [items[j] for j in order[:n_valid]]


def _tokenizer(run_dir: Path, molecules: Sequence[str], resume: bool,
               in_context: bool) -> SmilesTokenizer:
    """The tokenizer of the run's newest checkpoint when resuming one, else one built from the
    data (the same on every rank)."""
    found = newest_checkpoint(run_dir) if resume else None
    if found is not None:
        return SmilesTokenizer.load(found[0])
    return SmilesTokenizer.build(molecules, in_context)


def pretrain_smiles(
    data: SmilesData,
    model_config: ModelConfig,
    train_config: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
) -> Trainer:
    """Train a causal SMILES LM; the model and its tokenizer.json land in run_dir/checkpoint.

    The config's vocab_size and alphabet are set from the learned vocabulary; validation runs every
    tenth of the run unless train_config.eval_every says otherwise.
    """
    run_dir = Path(run_dir)
    context = model_config.context_length
    if data.in_context:
        summary = ValiditySummary()
        domains = [valid_smiles(domain, summary)[0] for domain in read_domains(data.path)]
        molecules = [m for d in domains for m in d]
        report(summary.line(f"{data.path} ({len(domains)} domains)"))
    else:
        molecules, summary = valid_smiles(read_smiles(data.path))
        report(summary.line(str(data.path)))
    if not molecules:
        raise ConfigError(f"{data.path}: no valid SMILES to train on")
    tokenizer = _tokenizer(run_dir, molecules, resume, data.in_context)
    model_config = ModelConfig.from_dict({**model_config.to_dict(), "alphabet": SmilesTokenizer.name,
                                          "vocab_size": len(tokenizer)})
    cfg = train_config
    if cfg.eval_every == 0:
        cfg = TrainConfig.from_dict({**cfg.to_dict(), "eval_every": max(1, cfg.max_steps // 10)})
    if data.in_context:
        encoded, too_long = [], 0
        for domain in domains:
            kept, dropped = encode_fitting(tokenizer, domain, context - 1)
            encoded.append(kept)
            too_long += dropped
        train, valid = _split([d for d in encoded if d], data.valid_fraction, data.seed, "domains")
        source = DomainContexts(tokenizer, train, cfg.batch_size, context, seed=cfg.seed)
        valid_batches = functools.partial(domain_eval_batches, tokenizer, valid, cfg.batch_size,
                                          context, cfg.eval_batches, cfg.seed)
        what = f"{len(train)} training and {len(valid)} validation domains"
    else:
        encoded, too_long = encode_fitting(tokenizer, molecules, context - 2)
        train, valid = _split(encoded, data.valid_fraction, data.seed, "molecules")
        source = MoleculeBatches(tokenizer, train, cfg.batch_size, seed=cfg.seed)
        valid_batches = functools.partial(molecule_eval_batches, tokenizer, valid, cfg.batch_size,
                                          cfg.eval_batches)
        what = f"{len(train):,} training and {len(valid):,} validation molecules"
    report(f"{what}; {too_long:,} molecules longer than the context ({context} tokens) skipped; "
           f"vocabulary {len(tokenizer)} tokens")
    torch.manual_seed(cfg.seed)
    model = XLSTMLanguageModel(model_config)
    files = {TOKENIZER_FILE: tokenizer.to_json()}
    trainer = Trainer(model, cfg, source, run_dir, valid_batches, resume=resume,
                      checkpoint_files=files, run_files=files)
    trainer.train()
    return trainer


def load_smiles_model(checkpoint: str | Path, device: str | torch.device = "cpu"
                      ) -> tuple[XLSTMLanguageModel, SmilesTokenizer]:
    """A SMILES checkpoint's model in eval mode and its tokenizer (sizes checked against each other)."""
    from bioxlstm.convert import official_tokenizer

    model = XLSTMLanguageModel.from_pretrained(checkpoint, map_location=device).eval()
    if model.config.alphabet != SmilesTokenizer.name:
        raise CheckpointError(f"{checkpoint}: a {model.config.alphabet or 'dna'} model, not a SMILES "
                              f"model")
    tokenizer = official_tokenizer(checkpoint)
    if tokenizer is None:
        tokenizer = SmilesTokenizer.load(checkpoint)
    if len(tokenizer) != model.config.vocab_size:
        raise CheckpointError(f"{checkpoint}: tokenizer.json has {len(tokenizer)} tokens but the "
                              f"model's vocab_size is {model.config.vocab_size}")
    return model, tokenizer
