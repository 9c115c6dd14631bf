"""Batch sources the trainer draws from: a small protocol, random token windows, eval windows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from bioxlstm.alphabets import IGNORE_INDEX
from bioxlstm.errors import ConfigError

Batch = dict[str, Any]


@runtime_checkable
class BatchSource(Protocol):
    """An endless, resumable stream of training batches (keyword arguments of `model.loss`).

    Batches are global: under torchrun every rank holds an identical source, draws the same
    batch and trains on its share of the rows, so the saved position is the same on all ranks.
    """

    def next_batch(self) -> Batch:
        """The next global batch; must hold `input_ids` and may hold `labels` or `objective`.

        Tensors whose first dimension is the batch rows are split over the ranks by rows.
        """
        ...

    def state_dict(self) -> dict[str, Any]:
        """The source's position, so a resumed run draws exactly the batches it would have."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Move the source back to a position saved by `state_dict`."""
        ...


def _check_tokens(tokens: Tensor, seq_len: int, batch_size: int) -> None:
    """Raise ConfigError naming the first bad argument of a window source."""
    for name, value in (("seq_len", seq_len), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"'{name}' must be a positive integer, got {value!r}")
    if not isinstance(tokens, Tensor) or tokens.dim() != 1 or tokens.is_floating_point():
        raise ConfigError("'tokens' must be a 1-D integer tensor of token ids")
    if tokens.numel() < seq_len:
        raise ConfigError(f"'tokens' holds {tokens.numel()} ids, fewer than seq_len={seq_len}")


def target_labels(vocabulary: Any) -> Callable[[Tensor], Tensor] | None:
    """ids -> labels with IGNORE_INDEX where an id is not one of the vocabulary's targets (DNA:
    N and most specials); None when every id but padding is a target (labels = ids)."""
    targets = torch.tensor(vocabulary.target_ids())
    if len(targets) >= len(vocabulary) - 1:
        return None

    def labels(ids: Tensor) -> Tensor:
        keep = torch.isin(ids, targets.to(ids.device))
        return torch.where(keep, ids, torch.full_like(ids, IGNORE_INDEX))

    return labels


def record_positions(tokens: Tensor, separator: int) -> Tensor:
    """Position ids that restart at every record: the separator is 0, its residues 1, 2, ...

    docs/model.md, section 7: rotary embeddings see positions within each sequence, not within the stream.
    """
    index = torch.arange(tokens.numel())
    last = torch.where(tokens == separator, index, torch.full_like(index, -1)).cummax(0).values
    return torch.where(last >= 0, index - last, index + 1)


class TokenWindows:
    """Random fixed-length windows of a token stream, drawn with the source's own generator.

    With `positions` (one id per token, e.g. from record_positions) batches carry the matching
    window of position ids too; with `labels` (ids -> labels, e.g. DNA's clm_labels, which drops
    N) they carry labels. With `rc_prob` and a `complement` table each window is read as its
    reverse complement with that probability (the other strand; record separators stay
    separators).
    """

    def __init__(self, tokens: Tensor, seq_len: int, batch_size: int, seed: int = 0,
                 positions: Tensor | None = None,
                 labels: Callable[[Tensor], Tensor] | None = None, rc_prob: float = 0.0,
                 complement: Tensor | None = None) -> None:
        _check_tokens(tokens, seq_len, batch_size)
        if positions is not None and positions.shape != tokens.shape:
            raise ConfigError("'positions' must hold one position id per token")
        if not 0.0 <= rc_prob <= 1.0 or (rc_prob > 0 and (complement is None or positions is not None)):
            raise ConfigError("'rc_prob' must be in [0, 1] and needs a complement map and no "
                              "position ids (DNA)")
        self.rc_prob, self.complement = rc_prob, complement
        self.positions = positions
        self.labels = labels
        self.tokens = tokens.long()
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.batches_drawn = 0
        self._offsets = torch.arange(seq_len)

    def next_batch(self) -> Batch:
        """A (batch_size, seq_len) block of windows starting at uniform random positions."""
        high = self.tokens.numel() - self.seq_len + 1
        starts = torch.randint(0, high, (self.batch_size,), generator=self.generator)
        self.batches_drawn += 1
        index = starts[:, None] + self._offsets
        batch = {"input_ids": self.tokens[index]}
        if self.rc_prob > 0:
            flip = torch.rand(self.batch_size, generator=self.generator) < self.rc_prob
            ids = batch["input_ids"]
            batch["input_ids"] = torch.where(flip[:, None], self.complement[ids.flip(1)], ids)
        if self.positions is not None:
            batch["position_ids"] = self.positions[index]
        if self.labels is not None:
            batch["labels"] = self.labels(batch["input_ids"])
        return batch

    def state_dict(self) -> dict[str, Any]:
        """Generator state and shape, enough to continue the same stream of windows."""
        return {"generator": self.generator.get_state(), "batches_drawn": self.batches_drawn,
                "seq_len": self.seq_len, "batch_size": self.batch_size, "rc_prob": self.rc_prob}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the stream saved by `state_dict`; the window shape must match."""
        for name in ("seq_len", "batch_size", "rc_prob"):
            if state[name] != getattr(self, name):
                raise ConfigError(f"'{name}' is {getattr(self, name)} but the saved source used "
                                  f"{state[name]}; resume with the same value")
        self.generator.set_state(state["generator"])
        self.batches_drawn = int(state["batches_drawn"])


def eval_batches(tokens: Tensor, seq_len: int, batch_size: int, max_batches: int | None = None,
                 positions: Tensor | None = None,
                 labels: Callable[[Tensor], Tensor] | None = None) -> Iterator[Batch]:
    """Consecutive non-overlapping windows from the start, batched: the same every time.

    positions and labels as in TokenWindows.
    """
    _check_tokens(tokens, seq_len, batch_size)
    usable = tokens.numel() // seq_len * seq_len
    blocks = tokens.long()[:usable].view(-1, seq_len).split(batch_size)
    position_blocks = (None,) * len(blocks) if positions is None else \
        positions[:usable].view(-1, seq_len).split(batch_size)
    if max_batches is not None:
        blocks, position_blocks = blocks[:max_batches], position_blocks[:max_batches]
    return _batches(blocks, position_blocks, labels)


def _batches(blocks: tuple[Tensor, ...], position_blocks: tuple[Tensor | None, ...],
             labels: Callable[[Tensor], Tensor] | None) -> Iterator[Batch]:
    for block, pos in zip(blocks, position_blocks):
        batch: Batch = {"input_ids": block}
        if pos is not None:
            batch["position_ids"] = pos
        if labels is not None:
            batch["labels"] = labels(block)
        yield batch
