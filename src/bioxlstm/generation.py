"""One sampling loop for every alphabet: continue from a recurrent state, one token at a time.

DNA and protein prompts (`XLSTMLanguageModel.generate`), molecules (tasks/molecule_generation.py)
and new members of a protein family (tasks/family_generation.py) all sample through
`sample_continuation`: an optional set of allowed tokens, a stop token, each token's
log-probability, and position ids that either continue the stream or restart for a new record.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bioxlstm.sampling import sample_next


@torch.no_grad()
def sample_continuation(
    model: Any,
    state: Any,
    logits: Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    stop_token: int | None = None,
    allowed: Tensor | None = None,
    first_position: int | None = None,
) -> tuple[Tensor, Tensor]:
    """New tokens (B, N <= max_new_tokens) after `logits` (B, V), the model's output at the state.

    Also returns each token's log-probability (B, N) under the untempered distribution restricted
    to `allowed` (a bool mask over the vocabulary; None allows all). After `stop_token` a row
    keeps emitting it, with log-probability 0; the loop ends early once every row has stopped.
    `state` advances in place. With `first_position`, the new tokens get position ids
    first_position, first_position + 1, ... (a record's own positions for rotary models);
    otherwise positions continue the state's stream.
    """
    B, device = logits.shape[0], logits.device
    bias = None if allowed is None else torch.where(
        allowed.to(device), 0.0, float("-inf")).to(torch.float32)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    tokens, logps = [], []
    for step in range(max_new_tokens):
        masked = logits.float() if bias is None else logits.float() + bias
        nxt = sample_next(masked, temperature, top_k, top_p, generator)
        logp = masked.log_softmax(-1).gather(-1, nxt[:, None]).squeeze(1)
        if stop_token is not None:
            nxt = torch.where(done, torch.full_like(nxt, stop_token), nxt)
            logp = torch.where(done, torch.zeros_like(logp), logp)
            done |= nxt == stop_token
        tokens.append(nxt)
        logps.append(logp)
        if step == max_new_tokens - 1 or (stop_token is not None and bool(done.all())):
            break
        positions = None if first_position is None else \
            torch.full((B,), first_position + step, device=device)
        logits = model.step(nxt, state, positions)
    if not tokens:
        empty = torch.zeros(B, 0, device=device)
        return empty.long(), empty.float()
    return torch.stack(tokens, 1), torch.stack(logps, 1)
