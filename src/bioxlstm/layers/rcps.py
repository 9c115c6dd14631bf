"""Reverse-complement parameter sharing (RCPS, as in Caduceus), generic over a complement map.

RCPS runs every sub-layer on the forward channels and, reversed and channel-flipped, on the RC
channels with the same weights. No layer of the stack mixes batch rows, so that equals running the
shared stack once on the rows [x; RC(x)] and folding the RC rows back at the end: same numbers,
one stack call, and the blocks need not know about it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bioxlstm.strands import reverse


def rc_pair(ids: Tensor, complement: Tensor, lengths: Tensor | None = None) -> Tensor:
    """Rows [ids; RC(ids)] (2B, S); RC reverses each row within its length, padding stays put."""
    return torch.cat([ids, complement.to(ids.device)[reverse(ids, lengths)]])


def fold_logits(logits: Tensor, complement: Tensor, lengths: Tensor | None = None) -> Tensor:
    """(2B, S, V) -> (B, S, V): the RCPS head, W h_f[t] + W[complement] h_rc read in the forward frame.

    The RC rows' logits are permuted over the vocabulary by `complement` and reversed back (within
    `lengths`) before being added to the forward rows', which makes the model RC-equivariant.
    """
    fwd, rc = logits.chunk(2)
    return fwd + reverse(rc[..., complement.to(logits.device)], lengths)


def fold_hidden(hidden: Tensor, lengths: Tensor | None = None) -> Tensor:
    """(2B, S, d) -> (B, S, d): mean of the forward rows and the RC rows reversed back.

    RC(x) then gets at position t what x gets at its mirror position, so per-token features keep
    d channels and their mean over a sequence is RC-invariant.
    """
    fwd, rc = hidden.chunk(2)
    return (fwd + reverse(rc, lengths)) / 2
