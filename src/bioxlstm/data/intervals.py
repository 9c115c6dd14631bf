"""Genome intervals with a train/valid/test split: a BED file (HyenaDNA/Caduceus) or whole chromosomes."""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bioxlstm.errors import BioXLSTMError

SPLITS = ("train", "valid", "test")
_HEADERS = ("#", "track", "browser")


class IntervalError(BioXLSTMError, ValueError):
    """An interval file or a requested split is unusable."""


@dataclass(frozen=True)
class Interval:
    """Bases [start, end) of chrom (0-based, half-open) assigned to one split."""

    chrom: str
    start: int
    end: int
    split: str

    def __len__(self) -> int:
        return self.end - self.start


def read_intervals(path: str | Path, lengths: Mapping[str, int] | None = None) -> list[Interval]:
    """Intervals of a BED file with columns chrom, start, end, split (extra columns ignored).

    Header (`#`, track, browser) and blank lines are skipped; plain or gzip. Given the genome's
    chromosome `lengths`, each interval must lie on a chromosome of that genome.
    """
    path = Path(path)
    if not path.is_file():
        raise IntervalError(f"{path}: no such interval file")
    intervals, lines = [], []
    try:
        with _open(path) as fh:
            for lineno, line in enumerate(fh, 1):
                fields = line.split()
                if not fields or fields[0].startswith(_HEADERS):
                    continue
                intervals.append(_parse(fields, f"{path}, line {lineno}", lengths))
                lines.append(lineno)
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise IntervalError(f"{path}: cannot be read as BED ({err})") from None
    if not intervals:
        raise IntervalError(f"{path}: no intervals")
    _check_no_leak(intervals, lines, path)
    return intervals


def _open(path: Path):
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt") if gz else open(path)


def _parse(fields: list[str], where: str, lengths: Mapping[str, int] | None) -> Interval:
    """One BED line as an Interval; IntervalError names the line and what is wrong with it."""
    if len(fields) < 4:
        raise IntervalError(f"{where}: expected 4 columns (chrom start end split), got {len(fields)}")
    chrom, start, end, split = fields[:4]
    try:
        start, end = int(start), int(end)
    except ValueError:
        raise IntervalError(f"{where}: start and end must be integers, got {start!r} and "
                            f"{end!r}") from None
    if start < 0 or start >= end:
        raise IntervalError(f"{where}: need 0 <= start < end, got start {start} and end {end}")
    if split not in SPLITS:
        raise IntervalError(f"{where}: unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if lengths is not None:
        if chrom not in lengths:
            raise IntervalError(f"{where}: the genome has no chromosome {chrom!r}")
        if end > lengths[chrom]:
            raise IntervalError(f"{where}: {chrom}:{start}-{end} ends past the chromosome end "
                                f"({lengths[chrom]:,} bases); is it for another genome build?")
    return Interval(chrom, start, end, split)


def _check_no_leak(intervals: list[Interval], lines: list[int], path: Path) -> None:
    """Intervals of different splits must not overlap, or evaluation would see training bases."""
    order = sorted(range(len(intervals)), key=lambda j: (intervals[j].chrom, intervals[j].start))
    reach: dict[str, int] = {}  # per split, the interval reaching furthest on the current chrom
    for j in order:
        iv = intervals[j]
        for split, k in reach.items():
            other = intervals[k]
            if split != iv.split and other.chrom == iv.chrom and other.end > iv.start:
                raise IntervalError(f"{path}, line {lines[j]}: {iv.split} interval overlaps the "
                                    f"{split} interval on line {lines[k]}")
        best = reach.get(iv.split)
        if best is None or intervals[best].chrom != iv.chrom or intervals[best].end < iv.end:
            reach[iv.split] = j


def select_split(intervals: Iterable[Interval], split: str,
                 source: str | Path | None = None) -> list[Interval]:
    """The intervals of one split; IntervalError (naming `source`, e.g. the BED file) if the
    split name is unknown or it holds no interval."""
    where = f"{source}: " if source else ""
    if split not in SPLITS:
        raise IntervalError(f"{where}unknown split {split!r}; use one of {', '.join(SPLITS)}")
    chosen = [iv for iv in intervals if iv.split == split]
    if not chosen:
        raise IntervalError(f"{where}no intervals in the {split!r} split")
    return chosen


def chromosome_intervals(lengths: Mapping[str, int], valid_chroms: Sequence[str],
                         test_chroms: Sequence[str] = ()) -> list[Interval]:
    """Whole chromosomes as intervals: the named ones valid or test, all others train.

    For a genome without a BED file: a chromosome-level split as in the paper, the same every run.
    """
    for name, chroms in (("valid", valid_chroms), ("test", test_chroms)):
        for chrom in chroms:
            if chrom not in lengths:
                raise IntervalError(f"{name} chromosome {chrom!r} is not in the genome")
    both = sorted(set(valid_chroms) & set(test_chroms))
    if both:
        raise IntervalError(f"chromosome {both[0]!r} cannot be both valid and test")
    if not valid_chroms:
        raise IntervalError("name at least one validation chromosome")
    splits = {**{c: "valid" for c in valid_chroms}, **{c: "test" for c in test_chroms}}
    intervals = [Interval(chrom, 0, length, splits.get(chrom, "train"))
                 for chrom, length in lengths.items() if length > 0]
    select_split(intervals, "train")
    return intervals
