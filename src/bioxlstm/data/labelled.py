"""Labelled sequences for classification, from CSV/TSV tables or FASTA, and a seeded hold-out split.

Tables follow the Genomic Benchmarks / Nucleotide Transformer layout: a header row naming a `sequence`
and a `label` column (other names can be chosen); comma or tab separated, plain or gzip. In FASTA the
label is a `label=VALUE` field of the header, e.g. `>seq17 label=1` (the key is the label column's
name). Labels are integers or class names; either way the distinct values, sorted (numerically for
integers), become class ids 0..K-1, so class names travel with the model.
"""

from __future__ import annotations

import csv
import gzip
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bioxlstm.alphabets import DNA, Alphabet, AlphabetError
from bioxlstm.data.fasta import fasta_records
from bioxlstm.errors import BioXLSTMError


class LabelledDataError(BioXLSTMError, ValueError):
    """A labelled-sequence file is missing, malformed or unusable for classification."""


@dataclass(frozen=True)
class Columns:
    """Names of the table columns to read (`id` is optional; without it records are numbered)."""

    sequence: str = "sequence"
    label: str = "label"
    id: str | None = None


@dataclass
class LabelledData:
    """Encoded sequences (alphabet ids, no separator) with class ids; classes[j] names class j."""

    ids: list[str]
    tokens: list[np.ndarray]
    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.tokens)

    def subset(self, indices: Sequence[int] | np.ndarray) -> LabelledData:
        """The records at `indices`, in that order, with the same classes."""
        return LabelledData([self.ids[j] for j in indices], [self.tokens[j] for j in indices],
                            self.labels[np.asarray(indices, dtype=np.int64)], self.classes)


def read_labelled(path: str | Path, alphabet: Alphabet = DNA, columns: Columns = Columns(),
                  classes: Sequence[str] | None = None) -> LabelledData:
    """Read and encode a labelled file; pass the training set's `classes` when reading its test set.

    Every error names the file and line: missing columns, empty sequences, characters outside the
    alphabet, non-class labels (fractional numbers), a single class, labels unknown to `classes`.
    """
    path = Path(path)
    if not path.is_file():
        raise LabelledDataError(f"{path}: no such file")
    ids, tokens, raw, lines = [], [], [], []
    try:
        for lineno, name, seq, label in _records(path, columns):
            if not seq:
                raise LabelledDataError(f"{path}, line {lineno}: empty sequence")
            try:
                encoded = alphabet.encode(seq)
            except AlphabetError as err:
                raise LabelledDataError(f"{path}, line {lineno}, {err}") from None
            ids.append(name if name is not None else str(len(ids)))
            tokens.append(np.asarray(encoded, dtype=np.uint8))
            raw.append(_class_value(path, lineno, label, columns.label))
            lines.append(lineno)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as err:
        raise LabelledDataError(f"{path}: cannot be read ({err})") from None
    if not tokens:
        raise LabelledDataError(f"{path}: no records")
    if classes is None:
        classes = _sorted_classes(raw)
        if len(classes) < 2:
            raise LabelledDataError(f"{path}: column '{columns.label}' holds only one class "
                                    f"({classes[0]!r}); classification needs at least two")
    index = {name: j for j, name in enumerate(classes)}
    for lineno, value in zip(lines, raw):
        if value not in index:
            raise LabelledDataError(f"{path}, line {lineno}: label {value!r} is not one of the "
                                    f"training classes {list(classes)}")
    return LabelledData(ids, tokens, np.array([index[v] for v in raw], dtype=np.int64),
                        list(classes))


def _records(path: Path, columns: Columns) -> Iterator[tuple[int, str | None, str, str]]:
    """(line number, id or None, sequence, raw label) per record of a FASTA file or a table."""
    with _open(path) as fh:
        is_fasta = fh.read(1) == ">"
        if not is_fasta:
            fh.seek(0)
            yield from _table_records(fh, path, columns)
    if is_fasta:
        yield from _fasta_records(path, columns)


def _open(path: Path):
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", newline="") if gz else open(path, newline="")


def _table_records(fh, path: Path, columns: Columns) -> Iterator[tuple[int, str | None, str, str]]:
    header_line = fh.readline()
    delimiter = "\t" if "\t" in header_line else ","
    header = [h.strip() for h in next(csv.reader([header_line], delimiter=delimiter), [])]
    wanted = [c for c in (columns.sequence, columns.label, columns.id) if c is not None]
    missing = [c for c in wanted if c not in header]
    if missing:
        raise LabelledDataError(f"{path}, line 1: no column {missing[0]!r} in the header "
                                f"(columns: {', '.join(header) or 'none'})")
    seq_col, label_col = header.index(columns.sequence), header.index(columns.label)
    id_col = header.index(columns.id) if columns.id is not None else None
    reader = csv.reader(fh, delimiter=delimiter)
    for row in reader:
        lineno = reader.line_num + 1
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != len(header):
            raise LabelledDataError(f"{path}, line {lineno}: {len(row)} fields, but the header "
                                    f"has {len(header)}")
        name = row[id_col].strip() if id_col is not None else None
        yield lineno, name, row[seq_col].strip(), row[label_col].strip()


def _fasta_records(path: Path, columns: Columns) -> Iterator[tuple[int, str | None, str, str]]:
    """Records of fasta_records whose header carries the label as LABEL=VALUE."""
    key = f"{columns.label}="
    for lineno, header, sequence in fasta_records(path):
        fields = header.split()
        labels = [f[len(key):] for f in fields[1:] if f.startswith(key)]
        if not labels:
            raise LabelledDataError(f"{path}, line {lineno}: the header has no '{key}VALUE' "
                                    f"field (expected e.g. '>seq1 {key}1')")
        yield lineno, fields[0], sequence, labels[0]


def _class_value(path: Path, lineno: int, label: str, column: str) -> str:
    """The label as a class name: integers (also written '1.0') in canonical form, names as given."""
    if not label:
        raise LabelledDataError(f"{path}, line {lineno}: empty label in column '{column}'")
    try:
        number = float(label)
    except ValueError:
        return label
    if not math.isfinite(number) or not number.is_integer():
        raise LabelledDataError(f"{path}, line {lineno}: column '{column}' holds {label!r}, not a "
                                f"class; classification needs integer labels or class names")
    return str(int(number))


def _sorted_classes(values: list[str]) -> list[str]:
    """Distinct labels, sorted numerically when all are integers, else as text."""
    distinct = set(values)
    if all(_is_int(v) for v in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


def _is_int(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified seeded split: (kept, held out) index arrays, sorted.

    From each class, round(fraction * its size) random members are held out, never all of them,
    so both parts keep every class that has at least two members.
    """
    if not 0.0 < fraction < 1.0:
        raise LabelledDataError(f"the hold-out fraction must be in (0, 1), got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        n = min(int(round(fraction * len(members))), len(members) - 1)
        held.append(rng.permutation(members)[:n])
    held_out = np.sort(np.concatenate(held))
    if held_out.size == 0:
        raise LabelledDataError(f"{len(labels)} records are too few to hold out a fraction of "
                                f"{fraction}")
    kept = np.setdiff1d(np.arange(len(labels)), held_out)
    return kept, held_out
