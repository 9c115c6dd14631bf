"""Per-sequence readouts of `[bos] + sequence` rows: which positions are bases, mean pooling, and
the reverse complement of such rows (for post-hoc conjoining and strand augmentation)."""

from __future__ import annotations

import torch
from torch import Tensor

from bioxlstm.strands import reverse_complement


def base_mask(lengths: Tensor, start: int, width: int) -> Tensor:
    """(B, width) bool: which of positions start..start+width-1 hold bases (1 <= t < length)."""
    t = torch.arange(start, start + width, device=lengths.device).unsqueeze(0)
    return (t >= 1) & (t < lengths.unsqueeze(1))


def reverse_complement_rows(ids: Tensor, lengths: Tensor) -> Tensor:
    """RC of the bases of `[separator] + bases` rows (B, S), the separator kept in front."""
    return torch.cat([ids[:, :1], reverse_complement(ids[:, 1:], (lengths - 1).clamp(min=1))], dim=1)


def mean_pool(hidden: Tensor, lengths: Tensor) -> Tensor:
    """Mean of hidden (B, S, d) over each row's bases; differentiable, for fine-tuning."""
    mask = base_mask(lengths, 0, hidden.shape[1]).unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / (lengths - 1).clamp(min=1).unsqueeze(1).to(hidden.dtype)
