"""Homologs as a context: token layout, chunkwise encoding that carries the recurrent state, and
continuing from that state for a batch of queries.

Each context sequence is <cls> + residues with position ids 0, 1..L (docs/model.md, section 7), so a model
sees exactly what homology-aware pretraining showed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from bioxlstm.alphabets import PROTEIN
from bioxlstm.data.fim import plain_sequence
from bioxlstm.model import LMState, XLSTMLanguageModel


def context_tokens(sequences: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Token ids and position ids (both (S,)) of sequences laid out as <cls> + residues each."""
    tokens: list[int] = []
    positions: list[int] = []
    for j, seq in enumerate(sequences):
        piece = plain_sequence(PROTEIN.encode(seq, record=f"context sequence {j + 1}"))
        tokens += piece.tokens
        positions += piece.positions
    return torch.tensor(tokens, dtype=torch.long), torch.tensor(positions, dtype=torch.long)


@torch.no_grad()
def encode_context(model: XLSTMLanguageModel, tokens: Tensor, positions: Tensor,
                   chunk_tokens: int = 2048) -> tuple[LMState, Tensor]:
    """Run a (S,) context through the model in pieces of chunk_tokens, carrying the state.

    Returns the state after the last token and the logits (V,) predicting the token after it;
    memory does not grow with the context length.
    """
    if tokens.numel() == 0:
        raise ValueError("the context is empty")
    device = next(model.parameters()).device
    state, logits = None, None
    for start in range(0, tokens.numel(), chunk_tokens):
        ids = tokens[start:start + chunk_tokens].to(device)[None]
        pos = positions[start:start + chunk_tokens].to(device)[None]
        out = model(ids, state=state, return_state=True, position_ids=pos)
        state, logits = out.state, out.logits[0, -1]
    return state, logits


def expand_state(state: LMState, batch: int) -> LMState:
    """The state of a single row repeated for `batch` rows (every tensor's first dimension)."""
    return LMState(_expand(state.blocks, batch), state.position)


def _expand(obj: Any, batch: int) -> Any:
    if isinstance(obj, Tensor):
        return obj.expand(batch, *obj.shape[1:]).contiguous()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_expand(x, batch) for x in obj)
    if isinstance(obj, dict):
        return {k: _expand(v, batch) for k, v in obj.items()}
    return obj


@torch.no_grad()
def target_log_likelihood(model: XLSTMLanguageModel, context: Sequence[str], target: str,
                          chunk_tokens: int = 2048) -> tuple[float, int]:
    """Sum of log p(residue) over `target`'s residues when it follows `context` (each as
    <cls> + residues), and the number of residues: conditional perplexity is exp(-sum / n)."""
    device = next(model.parameters()).device
    tokens, positions = context_tokens([*context, target])
    n = len(target)
    state = None
    if tokens.numel() > n + 1:
        state, _ = encode_context(model, tokens[: -n - 1], positions[: -n - 1], chunk_tokens)
    ids, pos = tokens[-n - 1:].to(device)[None], positions[-n - 1:].to(device)[None]
    logits = model(ids, state=state, position_ids=pos).logits[0, :-1].float()
    logp = logits.log_softmax(-1).gather(-1, ids[0, 1:, None]).sum()
    return float(logp), n
