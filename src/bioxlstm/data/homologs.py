"""Sequence weights of a family and weighted sampling of homologs for a context.

The weight of member i is 1 / (number of members, itself included, whose identity to i is at
least the threshold, 0.8 by default); identity counts identical residues over i's non-gap match
columns (DeepSequence/EVmutation). Redundant clusters thus count about once.
"""

from __future__ import annotations

import torch

from bioxlstm.data.msa import AMINO_ACIDS, Family
from bioxlstm.errors import ConfigError

_INDEX = {aa: j for j, aa in enumerate(AMINO_ACIDS + "XBUZO")}


def sequence_weights(aligned: list[str], threshold: float = 0.8, block: int = 512) -> torch.Tensor:
    """1 / neighbour count per row of an alignment (equal-length match-column rows)."""
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"identity threshold must be in (0, 1], got {threshold}")
    N, L = len(aligned), len(aligned[0])
    codes = torch.full((N, L), -1, dtype=torch.long)
    for i, row in enumerate(aligned):
        codes[i] = torch.tensor([_INDEX.get(ch, -1) for ch in row])
    onehot = torch.zeros(N, L, len(_INDEX))
    present = codes >= 0
    onehot[present.nonzero(as_tuple=True) + (codes[present],)] = 1.0
    flat = onehot.view(N, -1)
    own = present.sum(1).clamp(min=1).float()
    counts = torch.zeros(N)
    for start in range(0, N, block):
        same = flat[start:start + block] @ flat.T
        counts[start:start + block] = (same / own[start:start + block, None] >= threshold).sum(1).float()
    return 1.0 / counts.clamp(min=1)


def sample_homologs(family: Family, count: int, generator: torch.Generator,
                    exclude: str | None = None, threshold: float = 0.8,
                    weights: torch.Tensor | None = None) -> list[str]:
    """Up to `count` distinct members drawn without replacement, with probability proportional to
    their sequence weight (uniform for an unaligned family); `exclude` (e.g. the wild type) is
    never drawn."""
    if weights is None:
        weights = (sequence_weights(family.aligned, threshold) if family.aligned is not None
                   else torch.ones(len(family)))
    weights = weights.clone().double()
    if exclude is not None:
        weights[[j for j, s in enumerate(family.sequences) if s == exclude]] = 0.0
    available = int((weights > 0).sum())
    count = min(count, available)
    if count == 0:
        return []
    picks = torch.multinomial(weights, count, replacement=False, generator=generator)
    return [family.sequences[j] for j in picks.tolist()]
