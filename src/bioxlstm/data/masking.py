"""Training targets for DNA ids: causal-LM labels and BERT-style masked-LM corruption (docs/model.md §6)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bioxlstm.alphabets import DNA, IGNORE_INDEX
from bioxlstm.errors import ConfigError

BASES = torch.tensor([DNA.id(b) for b in "ACGT"])
MASK_ID = DNA.id("[MASK]")
SEP_ID = DNA.id("[SEP]")


@dataclass(frozen=True)
class MaskingConfig:
    """MLM rates: `rate` of each row's bases are selected; of those, `mask_fraction` become
    [MASK], `random_fraction` a random base and the rest stay as they are."""

    rate: float = 0.15
    mask_fraction: float = 0.8
    random_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 < self.rate <= 1.0:
            raise ConfigError(f"masking 'rate' must be in (0, 1], got {self.rate}")
        for name in ("mask_fraction", "random_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"masking '{name}' must be in [0, 1], got {getattr(self, name)}")
        if self.mask_fraction + self.random_fraction > 1.0:
            raise ConfigError("masking 'mask_fraction' + 'random_fraction' must be at most 1")


def is_base(ids: Tensor) -> Tensor:
    """True where an id is A, C, G or T (not N, padding or another special token)."""
    return torch.isin(ids, BASES.to(ids.device))


def clm_labels(ids: Tensor) -> Tensor:
    """Causal-LM labels: a copy of ids with everything but bases and [SEP] set to IGNORE_INDEX.

    model.loss("clm") predicts labels[:, t + 1] from position t, so an N, [PAD] or [MASK] is still
    read as input but never a target.
    """
    keep = is_base(ids) | (ids == SEP_ID)
    return torch.where(keep, ids, torch.full_like(ids, IGNORE_INDEX))


def mask_tokens(ids: Tensor, generator: torch.Generator,
                config: MaskingConfig = MaskingConfig()) -> tuple[Tensor, Tensor]:
    """MLM inputs and labels for ids (B, S), drawn from `generator`.

    Each row gets round(rate * its base count) selected bases, at least one when it has any, so
    every row with bases carries a loss term; N, padding and specials are never selected. Labels
    are the original ids at selected positions and IGNORE_INDEX elsewhere.
    """
    bases = is_base(ids)
    scores = torch.rand(ids.shape, generator=generator).to(ids.device).masked_fill(~bases, 2.0)
    ranks = scores.argsort(dim=-1).argsort(dim=-1)
    counts = bases.sum(-1, keepdim=True)
    quota = torch.where(counts > 0, (counts * config.rate).round().clamp(min=1), counts)
    selected = ranks < quota
    action = torch.rand(ids.shape, generator=generator).to(ids.device)
    random_bases = BASES.to(ids.device)[torch.randint(0, 4, ids.shape, generator=generator)
                                        .to(ids.device)]
    to_mask = selected & (action < config.mask_fraction)
    to_random = selected & ~to_mask & (action < config.mask_fraction + config.random_fraction)
    inputs = torch.where(to_mask, torch.full_like(ids, MASK_ID),
                         torch.where(to_random, random_bases, ids))
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
    return inputs, labels
