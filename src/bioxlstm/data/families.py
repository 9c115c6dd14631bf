"""Homology-aware samples: a family becomes one long context of FIM'd members in random order.

A sample is built from whole members (<cls> + FIM layout) until the next one would pass
`max_tokens`; a first member longer than that is cropped (without FIM) so every sample holds one.
`FamilyContexts` draws such samples as a resumable batch source for `Trainer`; `family_eval_samples`
gives fixed ones, and `evaluate_families` reports perplexity on all tokens, on the last member and
on the FIM (moved span) residues.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bioxlstm.alphabets import IGNORE_INDEX
from bioxlstm.data.batches import Batch
from bioxlstm.data.fim import CLS, PAD, FIMConfig, Piece, fim_sequence, sample_spans
from bioxlstm.errors import ConfigError

Members = Sequence[Sequence[int]]


@dataclass
class FamilySample:
    """One context: token ids, position ids, each token's member index and FIM flag (all (S,))."""

    tokens: Tensor
    positions: Tensor
    member: Tensor
    fim: Tensor

    def __len__(self) -> int:
        return self.tokens.numel()


def build_context(members: Members, max_tokens: int, fim: FIMConfig,
                  generator: torch.Generator) -> FamilySample:
    """Members in random order, each FIM'd, concatenated while they fit in max_tokens."""
    if max_tokens < 2:
        raise ConfigError(f"'max_tokens' must be at least 2, got {max_tokens}")
    if not members:
        raise ConfigError("a family needs at least one member")
    pieces: list[Piece] = []
    used = 0
    for index in torch.randperm(len(members), generator=generator).tolist():
        residues = list(members[index])
        spans = sample_spans(len(residues), fim, generator)
        extra = 1 + (2 * len(spans) + 1 if spans else 0)
        if used + len(residues) + extra > max_tokens:
            if pieces:
                break
            residues, spans = residues[: max_tokens - 1], []
        pieces.append(fim_sequence(residues, spans))
        used += len(pieces[-1].tokens)
    member = [j for j, p in enumerate(pieces) for _ in p.tokens]
    return FamilySample(torch.tensor([t for p in pieces for t in p.tokens]),
                        torch.tensor([q for p in pieces for q in p.positions]),
                        torch.tensor(member), torch.tensor([f for p in pieces for f in p.fim]))


def collate(samples: Sequence[FamilySample]) -> Batch:
    """Right-padded `model.loss` keyword arguments: input_ids, labels (-100 on padding), position_ids."""
    S = max(len(s) for s in samples)
    ids = torch.full((len(samples), S), PAD)
    pos = torch.zeros((len(samples), S), dtype=torch.long)
    labels = torch.full((len(samples), S), IGNORE_INDEX)
    for row, s in enumerate(samples):
        ids[row, : len(s)] = s.tokens
        pos[row, : len(s)] = s.positions
        labels[row, : len(s)] = s.tokens
    return {"input_ids": ids, "labels": labels, "position_ids": pos}


class FamilyContexts:
    """Endless batches of family contexts, drawn with the source's own generator (resumable)."""

    def __init__(self, families: Sequence[Members], max_tokens: int, batch_size: int,
                 fim: FIMConfig | None = None, seed: int = 0, names: Sequence[str] = ()) -> None:
        if not families:
            raise ConfigError("no training families")
        if batch_size < 1:
            raise ConfigError(f"'batch_size' must be a positive integer, got {batch_size}")
        self.families = families
        self.names = list(names)
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.fim = fim or FIMConfig()
        self.generator = torch.Generator().manual_seed(seed)
        self.batches_drawn = 0

    def next_batch(self) -> Batch:
        """batch_size contexts of uniformly drawn families."""
        picks = torch.randint(0, len(self.families), (self.batch_size,), generator=self.generator)
        samples = [build_context(self.families[j], self.max_tokens, self.fim, self.generator)
                   for j in picks.tolist()]
        self.batches_drawn += 1
        return collate(samples)

    def state_dict(self) -> dict[str, Any]:
        """Generator state and settings, enough to continue the same stream."""
        return {"generator": self.generator.get_state(), "batches_drawn": self.batches_drawn,
                "max_tokens": self.max_tokens, "batch_size": self.batch_size,
                "num_families": len(self.families)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the stream saved by `state_dict`; the settings must match."""
        for name, value in (("max_tokens", self.max_tokens), ("batch_size", self.batch_size),
                            ("num_families", len(self.families))):
            if state[name] != value:
                raise ConfigError(f"'{name}' is {value} but the saved source used {state[name]}; "
                                  f"resume with the same data and settings")
        self.generator.set_state(state["generator"])
        self.batches_drawn = int(state["batches_drawn"])

    def describe(self) -> dict[str, Any]:
        """What run.json records about the data."""
        return {"kind": "protein families", "families": self.names, "max_tokens": self.max_tokens,
                "fim_rate": self.fim.rate, "fim_max_spans": self.fim.max_spans}


def family_eval_samples(families: Sequence[Members], max_tokens: int, fim: FIMConfig | None = None,
                        seed: int = 0) -> list[FamilySample]:
    """One fixed context per family (its own seeded generator): the same every evaluation."""
    fim = fim or FIMConfig()
    return [build_context(members, max_tokens, fim, torch.Generator().manual_seed(seed + j))
            for j, members in enumerate(families)]


@torch.no_grad()
def evaluate_families(model: torch.nn.Module, samples: Sequence[FamilySample],
                      batch_size: int = 1) -> dict[str, float]:
    """Mean next-token loss and perplexity over all tokens, the last member's and the FIM residues.

    The last member's tokens exclude its leading <cls> (which closes the member before it).
    """
    device = next(model.parameters()).device
    sums = dict.fromkeys(("all", "last", "fim"), 0.0)
    counts = dict.fromkeys(sums, 0)
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        batch = {k: v.to(device) for k, v in collate(chunk).items()}
        logits = model(batch["input_ids"], position_ids=batch["position_ids"]).logits.float()
        targets = batch["labels"][:, 1:]
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2),
                                                targets.clamp(min=0), reduction="none").cpu()
        for row, s in enumerate(chunk):
            n = len(s) - 1
            values = nll[row, :n].double()
            last = (s.member[1:] == s.member[-1]) & (s.tokens[1:] != CLS)
            for key, mask in (("all", torch.ones(n, dtype=torch.bool)), ("last", last),
                              ("fim", s.fim[1:])):
                sums[key] += float(values[mask].sum())
                counts[key] += int(mask.sum())
    out: dict[str, float] = {}
    for key, suffix in (("all", ""), ("last", "_last"), ("fim", "_fim")):
        if counts[key]:
            mean = sums[key] / counts[key]
            out[f"valid_loss{suffix}"] = mean
            out[f"valid_ppl{suffix}"] = math.exp(mean)
    return out
