"""SMILES training batches: one molecule per row ([BEG] smiles [END]), or in-context rows of one domain.

In-context rows (docs/model.md, section 8) are [BEG] m1 . m2 . m3 ... : molecules of one
domain in a fresh random order, added while they fit the context length. Rows are right-padded with
[PAD], whose label is -100, so padding never counts in the loss.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from bioxlstm.alphabets import IGNORE_INDEX
from bioxlstm.data.batches import Batch
from bioxlstm.errors import ConfigError
from bioxlstm.smiles import SmilesTokenizer


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int) -> Batch:
    """A batch of right-padded rows: input_ids, and labels equal to them except -100 at padding."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for j, row in enumerate(rows):
        ids[j, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        labels[j, : len(row)] = ids[j, : len(row)]
    return {"input_ids": ids, "labels": labels}


def molecule_row(tokenizer: SmilesTokenizer, ids: Sequence[int]) -> list[int]:
    """[BEG] ids [END]: how one molecule is fed to an unconditional model."""
    return [tokenizer.bos_id, *ids, tokenizer.eos_id]


def icl_row(tokenizer: SmilesTokenizer, molecules: Sequence[Sequence[int]], order: Sequence[int],
            max_len: int) -> list[int]:
    """[BEG] m_order[0] . m_order[1] . ... with as many whole molecules as fit in max_len tokens."""
    row = [tokenizer.bos_id]
    for j in order:
        extra = list(molecules[j]) if len(row) == 1 else [tokenizer.separator_id, *molecules[j]]
        if len(row) + len(extra) > max_len:
            break
        row.extend(extra)
    return row


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"'{name}' must be a positive integer, got {value!r}")


class MoleculeBatches:
    """Random molecules (with replacement) as [BEG] smiles [END] rows, from the source's own generator."""

    def __init__(self, tokenizer: SmilesTokenizer, molecules: Sequence[Sequence[int]],
                 batch_size: int, seed: int = 0) -> None:
        _check_positive(batch_size=batch_size)
        if not molecules:
            raise ConfigError("no molecules to train on")
        self.tokenizer = tokenizer
        self.rows = [molecule_row(tokenizer, m) for m in molecules]
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.batches_drawn = 0

    def next_batch(self) -> Batch:
        """batch_size molecules drawn uniformly, padded to the longest."""
        picks = torch.randint(0, len(self.rows), (self.batch_size,), generator=self.generator)
        self.batches_drawn += 1
        return pad_rows([self.rows[int(j)] for j in picks], self.tokenizer.pad_id)

    def describe(self) -> dict[str, Any]:
        """What the run trains on, for its run.json."""
        return {"molecules": len(self.rows), "vocab_size": len(self.tokenizer)}

    def state_dict(self) -> dict[str, Any]:
        """Generator state, enough to continue the same stream of batches."""
        return {"generator": self.generator.get_state(), "batches_drawn": self.batches_drawn,
                "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the stream saved by `state_dict`; the batch size must match."""
        if state["batch_size"] != self.batch_size:
            raise ConfigError(f"'batch_size' is {self.batch_size} but the saved source used "
                              f"{state['batch_size']}; resume with the same value")
        self.generator.set_state(state["generator"])
        self.batches_drawn = int(state["batches_drawn"])


class DomainContexts(MoleculeBatches):
    """In-context rows: a random domain per row, its molecules in a fresh random order, up to max_len."""

    def __init__(self, tokenizer: SmilesTokenizer, domains: Sequence[Sequence[Sequence[int]]],
                 batch_size: int, max_len: int, seed: int = 0) -> None:
        _check_positive(batch_size=batch_size, max_len=max_len)
        domains = [d for d in domains if d]
        if not domains:
            raise ConfigError("no domains to train on")
        self.tokenizer = tokenizer
        self.domains = domains
        self.batch_size = batch_size
        self.max_len = max_len
        self.generator = torch.Generator().manual_seed(seed)
        self.batches_drawn = 0

    def next_batch(self) -> Batch:
        """batch_size rows, each from a uniformly drawn domain, shuffled anew."""
        rows = []
        for j in torch.randint(0, len(self.domains), (self.batch_size,), generator=self.generator):
            domain = self.domains[int(j)]
            order = torch.randperm(len(domain), generator=self.generator).tolist()
            rows.append(icl_row(self.tokenizer, domain, order, self.max_len))
        self.batches_drawn += 1
        return pad_rows(rows, self.tokenizer.pad_id)

    def describe(self) -> dict[str, Any]:
        """What the run trains on, for its run.json."""
        return {"domains": len(self.domains), "molecules": sum(len(d) for d in self.domains),
                "context_tokens": self.max_len, "vocab_size": len(self.tokenizer)}


def molecule_eval_batches(tokenizer: SmilesTokenizer, molecules: Sequence[Sequence[int]],
                          batch_size: int, max_batches: int) -> Iterator[Batch]:
    """The first molecules in order, batch by batch: the same validation batches every time."""
    rows = [molecule_row(tokenizer, m) for m in molecules[: batch_size * max_batches]]
    return (pad_rows(rows[i: i + batch_size], tokenizer.pad_id) for i in range(0, len(rows), batch_size))


def domain_eval_batches(tokenizer: SmilesTokenizer, domains: Sequence[Sequence[Sequence[int]]],
                        batch_size: int, max_len: int, max_batches: int, seed: int = 0) -> Iterator[Batch]:
    """Fixed in-context rows of held-out domains (a seeded order per domain, cycling over domains)."""
    if not any(domains):
        raise ConfigError("no held-out domains to validate on")
    generator = torch.Generator().manual_seed(seed)
    rows: list[list[int]] = []
    while len(rows) < batch_size * max_batches:
        for domain in domains:
            order = torch.randperm(len(domain), generator=generator).tolist()
            rows.append(icl_row(tokenizer, domain, order, max_len))
    rows = rows[: batch_size * max_batches]
    return (pad_rows(rows[i: i + batch_size], tokenizer.pad_id) for i in range(0, len(rows), batch_size))

