"""Post-hoc conjoining (PH) of any model's two strands (the ids' strand operations: bioxlstm.strands).

PH (docs/model.md, section 6): run a model on x and on RC(x) and average what it says, read in x's frame.
The result is exactly RC-invariant (pooled) or RC-equivariant (per position) whatever the model;
train such models with RC augmentation so both strands are in distribution.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from bioxlstm.layers.rcps import rc_pair
from bioxlstm.model import XLSTMLanguageModel
from bioxlstm.strands import DNA_COMPLEMENT, reverse


def conjoined_log_probs(
    model: XLSTMLanguageModel, ids: Tensor, lengths: Tensor | None = None
) -> Tensor:
    """Per-position log-probabilities (B, S, 12): the mean of the model's distributions on x and RC(x).

    The RC run's distributions are reversed back to x's frame (within `lengths`) and complemented
    over the vocabulary, then averaged as probabilities (so each position is still a distribution):
    the output on RC(x) is the complemented output on x, reversed. Position t predicts token t in a
    bidirectional/MLM model, so this is its natural per-position output. A causal model's forward
    run at t predicts x[t+1] from x[:t+1] but its RC run predicts x[t-1] from x[t:]: for causal
    models use conjoined_pooled on pooled outputs instead.
    """
    lengths = _as_lengths(lengths, ids)
    table = DNA_COMPLEMENT.to(ids.device)
    logits = model(rc_pair(ids, table, lengths), lengths=_twice(lengths)).logits
    if logits.shape[-1] != len(table):
        raise ValueError(f"conjoining needs a DNA model with {len(table)} tokens, "
                         f"got {logits.shape[-1]}")
    logp = logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(-1)
    fwd, rc = logp.chunk(2)
    rc = reverse(rc[..., table], lengths)
    return torch.logaddexp(fwd, rc) - math.log(2)


def conjoined_pooled(
    fn: Callable[[Tensor, Tensor | None], Tensor], ids: Tensor, lengths: Tensor | None = None
) -> Tensor:
    """Mean of fn(x, lengths) and fn(RC(x), lengths): per-sequence outputs made RC-invariant.

    `fn` maps ids (N, S) and lengths (N,) or None to per-sequence outputs (N, ...), for example
    class logits or `lambda i, n: model.embed(i, n).pooled`; it runs once, on the rows [x; RC(x)].
    """
    lengths = _as_lengths(lengths, ids)
    fwd, rc = fn(rc_pair(ids, DNA_COMPLEMENT.to(ids.device), lengths), _twice(lengths)).chunk(2)
    return (fwd + rc) / 2


def _as_lengths(lengths: Tensor | None, ids: Tensor) -> Tensor | None:
    return None if lengths is None else torch.as_tensor(lengths, device=ids.device)


def _twice(lengths: Tensor | None) -> Tensor | None:
    return None if lengths is None else lengths.repeat(2)
