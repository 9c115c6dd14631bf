"""Strand operations on batches of sequences: reversal within each row's length, complement of ids.

Rows are right-padded: position t of row b holds a token when t < lengths[b]. Reversing a row
reverses its tokens and leaves its padding where it is, so lengths are unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bioxlstm.alphabets import DNA

DNA_COMPLEMENT = torch.tensor(DNA.complement_ids())


def reverse(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of x (B, S, ...) within its own length; padding stays at the end."""
    if lengths is None:
        return x.flip(1)
    S = x.shape[1]
    t = torch.arange(S, device=x.device).unsqueeze(0)
    lengths = lengths.to(x.device).unsqueeze(1)
    idx = torch.where(t < lengths, lengths - 1 - t, t)
    idx = idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, idx)


def complement(ids: Tensor, table: Tensor = DNA_COMPLEMENT) -> Tensor:
    """Each id replaced by its complement's (DNA by default: A<->T, C<->G, N and specials fixed)."""
    return table.to(ids.device)[ids]


def reverse_complement(ids: Tensor, lengths: Tensor | None = None,
                       table: Tensor = DNA_COMPLEMENT) -> Tensor:
    """RC of each row of ids (B, S) within its own length; right padding stays in place."""
    return complement(reverse(ids, lengths), table)
