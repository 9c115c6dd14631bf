"""A stack of xLSTM blocks in any sLSTM/mLSTM pattern, with a state API for the whole stack."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from bioxlstm.config import ModelConfig
from bioxlstm.layers.blocks import BlockState, XLSTMBlock

StackState = list[BlockState]


class BlockStack(nn.Module):
    """Blocks 0..L-1; block j is sLSTM when j is in config.slstm_at, else mLSTM.

    Causal stacks take and return a per-block state so a long input can be fed in pieces.
    Bidirectional stacks share each block's weights between the two directions and keep no state.
    With `checkpointing` on, training keeps only each block's input and recomputes the block in
    the backward pass: activation memory drops from every block's to one block's, for about a
    third more compute.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.bidirectional = config.bidirectional
        self.checkpointing = False
        self.blocks = nn.ModuleList(XLSTMBlock(config, j) for j in range(config.num_blocks))

    def forward(
        self,
        x: Tensor,
        state: StackState | None = None,
        position_ids: Tensor | None = None,
        lengths: Tensor | None = None,
    ) -> tuple[Tensor, StackState]:
        """x (B, S, d) -> (B, S, d) and the end state of every block."""
        if self.bidirectional and state is not None:
            raise ValueError("a bidirectional stack sees the whole sequence at once: it takes no state")
        if state is not None and len(state) != len(self.blocks):
            raise ValueError(f"state has {len(state)} entries for a stack of {len(self.blocks)} blocks")
        states = [None] * len(self.blocks) if state is None else state
        new_states = []
        recompute = self.checkpointing and torch.is_grad_enabled()
        for block, s in zip(self.blocks, states):
            if recompute:
                x, s = checkpoint(block, x, s, position_ids, self.bidirectional, lengths,
                                  use_reentrant=False)
            else:
                x, s = block(x, s, position_ids, self.bidirectional, lengths)
            new_states.append(s)
        return x, new_states
