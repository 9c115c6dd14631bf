"""Reverse complement of DNA token ids, the operation every RC-aware model and augmentation uses."""

from __future__ import annotations

import torch
from torch import Tensor

from bioxlstm.alphabets import DNA
from bioxlstm.layers.blocks import reverse

COMPLEMENT = torch.tensor(DNA.complement_ids())


def complement(ids: Tensor) -> Tensor:
    """Complement each DNA id (A<->T, C<->G; N and specials map to themselves)."""
    return COMPLEMENT.to(ids.device)[ids]


def reverse_complement(ids: Tensor, lengths: Tensor | None = None) -> Tensor:
    """RC of each row of ids (B, S) within its own length; right padding stays in place."""
    return complement(reverse(ids, lengths))
