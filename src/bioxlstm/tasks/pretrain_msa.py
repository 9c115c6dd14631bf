"""Homology-aware pretraining on protein families (docs/model.md, section 7), split by family.

Families are split into train/valid/test as wholes, so validation measures how well the model
models members of families it has never seen, given their homologs in context.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from bioxlstm.alphabets import PROTEIN
from bioxlstm.config import ModelConfig, TrainConfig
from bioxlstm.data.families import FamilyContexts, FamilySample, evaluate_families, family_eval_samples
from bioxlstm.data.fim import FIMConfig
from bioxlstm.data.msa import read_msa_dir
from bioxlstm.errors import ConfigError
from bioxlstm.model import XLSTMLanguageModel
from bioxlstm.tasks.pretrain import _check_alphabet
from bioxlstm.train import Trainer

SPLIT_FILE = "families.json"


@dataclass(frozen=True)
class FamilySplit:
    """Family names of each split."""

    train: list[str]
    valid: list[str]
    test: list[str]


def split_families(names: Sequence[str], valid_fraction: float, test_fraction: float,
                   seed: int = 0) -> FamilySplit:
    """A seeded random split of whole families; each held-out split gets at least one family
    when its fraction is positive, and training keeps at least one."""
    for label, value in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"'{label}' must be in [0, 1), got {value}")
    n = len(names)
    n_valid = max(1, round(n * valid_fraction)) if valid_fraction > 0 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    if n - n_valid - n_test < 1:
        raise ConfigError(f"{n} families cannot be split into train, {n_valid} valid and {n_test} "
                          f"test families; add families or lower the fractions")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    shuffled = [sorted(names)[j] for j in order]
    return FamilySplit(sorted(shuffled[n_valid + n_test:]), sorted(shuffled[:n_valid]),
                       sorted(shuffled[n_valid:n_valid + n_test]))


class FamilyTrainer(Trainer):
    """A Trainer whose validation reports perplexity on all tokens, the last member and FIM tokens."""

    def __init__(self, *args, valid_samples: list[FamilySample], **kwargs) -> None:
        self.valid_samples = valid_samples
        super().__init__(*args, **kwargs)

    def evaluate(self) -> dict[str, float]:
        """valid_loss/valid_ppl (all tokens) plus _last and _fim variants, in eval mode."""
        was_training = self.model.training
        self.model.eval()
        with self._autocast():
            metrics = evaluate_families(self.model, self.valid_samples, self.config.batch_size)
        self.model.train(was_training)
        return metrics


def pretrain_msa(
    msa_dir: str | Path,
    model_config: ModelConfig,
    train_config: TrainConfig,
    run_dir: str | Path,
    max_tokens: int,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    fim: FIMConfig | None = None,
    resume: bool = False,
) -> FamilyTrainer:
    """Train a protein model on family contexts of a directory of MSAs; writes families.json with
    the split, metrics.jsonl, run.json and checkpoint/ into run_dir."""
    _check_alphabet(model_config, PROTEIN)
    if not model_config.rope:
        raise ConfigError("homology-aware training needs rope: true (position ids restart per "
                          "sequence and only rotary embeddings read them)")
    families = {f.name: f for f in read_msa_dir(msa_dir)}
    split = split_families(list(families), valid_fraction, test_fraction, train_config.seed)
    fim = fim or FIMConfig()
    encoded = {name: families[name].encoded() for name in split.train + split.valid}
    source = FamilyContexts([encoded[n] for n in split.train], max_tokens, train_config.batch_size,
                            fim, seed=train_config.seed, names=split.train)
    valid = family_eval_samples([encoded[n] for n in split.valid], max_tokens, fim,
                                seed=train_config.seed)
    torch.manual_seed(train_config.seed)
    model = XLSTMLanguageModel(model_config)
    trainer = FamilyTrainer(model, train_config, source, run_dir, valid or None, resume=resume,
                            valid_samples=valid,
                            run_files={SPLIT_FILE: json.dumps(split.__dict__, indent=2)})
    trainer.train()
    return trainer
