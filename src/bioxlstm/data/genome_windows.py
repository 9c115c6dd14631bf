"""Genome pretraining batches: random windows of one split for training, fixed ones for evaluation.

A row is [SEP] followed by seq_len - 1 bases of one interval, the same start-of-sequence marker the
FASTA streams and the finetune/embed/score inputs carry. Intervals too short for a window are skipped
rather than padded, so every batch is full-length and padding never reaches a bidirectional model.
Windows with more than `max_n_fraction` N (assembly gaps) are redrawn in training and left out of
evaluation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from bioxlstm.alphabets import DNA, encode_dna
from bioxlstm.data.batches import Batch
from bioxlstm.data.genome import Genome, GenomeError
from bioxlstm.data.intervals import Interval, IntervalError, select_split
from bioxlstm.data.masking import SEP_ID, MaskingConfig, clm_labels, mask_tokens
from bioxlstm.errors import ConfigError
from bioxlstm.strands import reverse_complement

OBJECTIVES = ("clm", "mlm")
N_ID = DNA.id("N")
MAX_DRAWS = 1000  # tries for one window under the N limit before the split is declared unusable


@dataclass(frozen=True)
class WindowConfig:
    """How windows are cut from the genome and turned into batches.

    rc_prob: chance that a training window is reverse-complemented (0.5 for post-hoc conjoined
    models, docs/model.md section 6).
    max_n_fraction: windows with a larger share of N are redrawn (training) or skipped (evaluation).
    """

    seq_len: int  # tokens per row: [SEP] + seq_len - 1 bases
    batch_size: int
    objective: str = "clm"
    rc_prob: float = 0.0
    max_n_fraction: float = 0.5
    masking: MaskingConfig = field(default_factory=MaskingConfig)

    def __post_init__(self) -> None:
        for name in ("seq_len", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"'{name}' must be a positive integer, got {value!r}")
        if self.seq_len < 2:
            raise ConfigError(f"'seq_len' must be at least 2 ([SEP] and a base), got {self.seq_len}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"'objective' must be one of {', '.join(OBJECTIVES)}, "
                              f"got {self.objective!r}")
        if not 0.0 <= self.rc_prob <= 1.0:
            raise ConfigError(f"'rc_prob' must be in [0, 1], got {self.rc_prob}")
        if not 0.0 <= self.max_n_fraction < 1.0:
            raise ConfigError(f"'max_n_fraction' must be in [0, 1), got {self.max_n_fraction}")

    @property
    def bases(self) -> int:
        """Bases per window: one position of seq_len holds the leading [SEP]."""
        return self.seq_len - 1


class GenomeWindows:
    """Random windows of one split's intervals, uniform over all window positions, as batches.

    Batches hold input_ids and labels (B, seq_len) and the objective name. Every draw (window, RC
    flip, MLM mask) comes from the source's own generator, so `state_dict` resumes it exactly.
    """

    def __init__(self, genome: Genome, intervals: Sequence[Interval], config: WindowConfig,
                 split: str = "train", seed: int = 0) -> None:
        self.genome = genome
        self.config = config
        self.intervals = usable_intervals(genome, intervals, config.bases, split)
        starts = torch.tensor([len(iv) - config.bases + 1 for iv in self.intervals])
        self._ends = starts.cumsum(0)  # window positions of intervals [0, j] together
        self.generator = torch.Generator().manual_seed(seed)
        self.batches_drawn = 0

    def next_batch(self) -> Batch:
        """batch_size windows, each reverse-complemented with probability rc_prob."""
        cfg = self.config
        ids = torch.stack([self._draw() for _ in range(cfg.batch_size)])
        flip = torch.rand(cfg.batch_size, generator=self.generator) < cfg.rc_prob
        ids = torch.where(flip[:, None], reverse_complement(ids), ids)
        self.batches_drawn += 1
        return make_batch(with_separator(ids), cfg, self.generator)

    def _draw(self) -> Tensor:
        """One window at a uniform position among all windows, redrawn while it is mostly N."""
        for _ in range(MAX_DRAWS):
            pos = int(torch.randint(0, int(self._ends[-1]), (1,), generator=self.generator))
            j = int(torch.searchsorted(self._ends, pos, right=True))
            iv = self.intervals[j]
            start = iv.start + pos - (int(self._ends[j - 1]) if j else 0)
            ids = fetch_ids(self.genome, iv.chrom, start, start + self.config.bases)
            if _n_fraction(ids) <= self.config.max_n_fraction:
                return ids
        raise GenomeError(f"{MAX_DRAWS} windows in a row held more than "
                          f"{self.config.max_n_fraction:.0%} N; check the intervals")

    def describe(self) -> dict[str, Any]:
        """What the run trains on, for its run.json."""
        return {"genome": str(self.genome.path), "intervals": len(self.intervals),
                "bases": sum(len(iv) for iv in self.intervals), "window": asdict(self.config)}

    def state_dict(self) -> dict[str, Any]:
        """Generator state plus what fixes the stream (config, intervals), to resume exactly."""
        return {"generator": self.generator.get_state(), "batches_drawn": self.batches_drawn,
                "config": asdict(self.config), "intervals": _fingerprint(self.intervals)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the stream saved by `state_dict`; config and intervals must be the same."""
        for name, value in asdict(self.config).items():
            if state["config"].get(name) != value:
                raise ConfigError(f"window setting '{name}' is {value!r} but the saved source "
                                  f"used {state['config'].get(name)!r}; resume with the same value")
        if state["intervals"] != _fingerprint(self.intervals):
            raise ConfigError("the intervals differ from those of the saved run; resume with the "
                              "same genome, interval file and split")
        self.generator.set_state(state["generator"])
        self.batches_drawn = int(state["batches_drawn"])


def genome_eval_batches(genome: Genome, intervals: Sequence[Interval], config: WindowConfig,
                        split: str = "valid", max_batches: int | None = None,
                        seed: int = 0) -> Iterator[Batch]:
    """Consecutive non-overlapping windows of each interval of split, batched: the same every call.

    Interval tails shorter than a window are left out; no RC; MLM masks come from a generator
    seeded with `seed` afresh on every call.
    """
    if max_batches is not None and max_batches < 1:
        raise ConfigError(f"'max_batches' must be a positive integer, got {max_batches}")
    chosen = usable_intervals(genome, intervals, config.bases, split)
    return _eval_stream(genome, chosen, config, max_batches, seed)


def _eval_stream(genome: Genome, intervals: list[Interval], config: WindowConfig,
                 max_batches: int | None, seed: int) -> Iterator[Batch]:
    generator = torch.Generator().manual_seed(seed)
    rows: list[Tensor] = []
    emitted = 0
    for iv in intervals:
        for start in range(iv.start, iv.end - config.bases + 1, config.bases):
            ids = fetch_ids(genome, iv.chrom, start, start + config.bases)
            if _n_fraction(ids) > config.max_n_fraction:
                continue
            rows.append(ids)
            if len(rows) == config.batch_size:
                yield make_batch(with_separator(torch.stack(rows)), config, generator)
                rows, emitted = [], emitted + 1
                if emitted == max_batches:
                    return
    if rows:
        yield make_batch(with_separator(torch.stack(rows)), config, generator)


def usable_intervals(genome: Genome, intervals: Sequence[Interval], bases: int,
                     split: str) -> list[Interval]:
    """The split's intervals that hold at least one window; IntervalError if none does or one
    lies outside the genome."""
    chosen = select_split(intervals, split)
    for iv in chosen:
        if iv.end > genome.lengths.get(iv.chrom, -1):
            raise IntervalError(f"interval {iv.chrom}:{iv.start}-{iv.end} lies outside the genome "
                                f"{genome.path}")
    usable = [iv for iv in chosen if len(iv) >= bases]
    if not usable:
        raise IntervalError(f"no {split} interval holds a window of {bases} bases (the longest "
                            f"has {max(len(iv) for iv in chosen):,} bases)")
    return usable


def fetch_ids(genome: Genome, chrom: str, start: int, end: int) -> Tensor:
    """DNA ids of bases [start, end) of chrom."""
    return encode_dna(genome.fetch(chrom, start, end), record=f"{chrom}:{start + 1}-{end}")


def with_separator(ids: Tensor) -> Tensor:
    """Windows (B, L) with a [SEP] column in front: (B, L + 1)."""
    return torch.cat([torch.full_like(ids[:, :1], SEP_ID), ids], dim=1)


def make_batch(ids: Tensor, config: WindowConfig, generator: torch.Generator) -> Batch:
    """The batch for windows ids (B, S): CLM labels, or MLM-corrupted inputs and labels."""
    if config.objective == "mlm":
        inputs, labels = mask_tokens(ids, generator, config.masking)
    else:
        inputs, labels = ids, clm_labels(ids)
    return {"input_ids": inputs, "labels": labels, "objective": config.objective}


def _n_fraction(ids: Tensor) -> float:
    return (ids == N_ID).float().mean().item()


def _fingerprint(intervals: Sequence[Interval]) -> str:
    text = "\n".join(f"{iv.chrom}\t{iv.start}\t{iv.end}" for iv in intervals)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
