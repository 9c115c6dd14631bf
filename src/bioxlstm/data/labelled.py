"""Labelled sequences or molecules, from CSV/TSV tables or FASTA, and seeded hold-out splits.

Tables follow the Genomic Benchmarks / Nucleotide Transformer layout: a header row naming a `sequence`
column (a SMILES model reads `smiles`) and a `label` column, or several target columns; comma or tab
separated, plain or gzip. In FASTA a target is a `NAME=VALUE` field of the header, e.g.
`>seq17 label=1` (the key is the target column's name), or, for one target, the last '|' field of
the name (`>seq17|1`, the Nucleotide Transformer tasks' `.fna` files). What the targets mean (classification,
multilabel, regression) and how missing values are marked is in `bioxlstm.data.targets`; class
names travel with the model.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bioxlstm.alphabets import DNA, Alphabet, AlphabetError
from bioxlstm.data.fasta import fasta_records
from bioxlstm.data.targets import TargetError, Targets, infer_targets, target_arrays
from bioxlstm.errors import BioXLSTMError
from bioxlstm.vocabulary import Vocabulary


class LabelledDataError(BioXLSTMError, ValueError):
    """A labelled-sequence file is missing, malformed or unusable for its task."""


@dataclass(frozen=True)
class Columns:
    """Names of the table columns to read. `sequence` None means `sequence`, or `smiles` for a
    SMILES vocabulary; `targets` names several target columns (empty: the `label` column alone);
    `id` is optional (without it records are numbered)."""

    sequence: str | None = None
    label: str = "label"
    id: str | None = None
    targets: tuple[str, ...] = ()

    @property
    def target_names(self) -> tuple[str, ...]:
        """The target columns: `targets`, or the label column alone."""
        return tuple(self.targets) or (self.label,)

    def sequence_for(self, vocabulary: Vocabulary) -> str:
        """The sequence column to read with `vocabulary`."""
        return self.sequence or ("sequence" if isinstance(vocabulary, Alphabet) else "smiles")


@dataclass
class LabelledData:
    """Encoded sequences (vocabulary ids, no separator) with their targets and source texts.

    labels: class ids (N,) with -1 where missing (classification), else floats (N, T) with NaN
    where missing. classes: the output names (class j is classes[j]; for the other tasks the
    target columns). task and targets say what the labels mean.
    """

    ids: list[str]
    tokens: list[np.ndarray]
    labels: np.ndarray
    classes: list[str]
    task: str = "classification"
    targets: list[str] = field(default_factory=lambda: ["label"])
    texts: list[str] = field(default_factory=list)
    spec: Targets | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    def subset(self, indices: Sequence[int] | np.ndarray) -> LabelledData:
        """The records at `indices`, in that order, with the same classes."""
        texts = [self.texts[j] for j in indices] if self.texts else []
        return LabelledData([self.ids[j] for j in indices], [self.tokens[j] for j in indices],
                            self.labels[np.asarray(indices, dtype=np.int64)], self.classes,
                            self.task, self.targets, texts, self.spec)

    def known(self) -> np.ndarray:
        """(N, T) bool: which targets are known (T = 1 for classification)."""
        if self.labels.ndim == 1:
            return (self.labels >= 0)[:, None]
        return ~np.isnan(self.labels)


def read_labelled(path: str | Path, alphabet: Vocabulary = DNA, columns: Columns = Columns(),
                  classes: Sequence[str] | None = None, task: str = "classification",
                  spec: Targets | None = None) -> LabelledData:
    """Read and encode a labelled file of a `task` (see bioxlstm.data.targets; `auto` chooses);
    pass the training set's `spec` (or, for classification, its `classes`) when reading its test set.

    Every error names the file and line: missing columns, empty sequences, characters outside the
    vocabulary, values that do not fit the task, a single class, labels unknown to the classes.
    """
    path = Path(path)
    if not path.is_file():
        raise LabelledDataError(f"{path}: no such file")
    if spec is None and classes is not None:
        spec = Targets("classification", columns.target_names, tuple(classes))
    ids, tokens, texts, raw, lines = [], [], [], [], []
    try:
        for lineno, name, seq, values in _records(path, columns, columns.sequence_for(alphabet)):
            tokens.append(_encode(alphabet, seq, path, lineno))
            ids.append(name if name is not None else str(len(ids)))
            texts.append(seq)
            raw.append(values)
            lines.append(lineno)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as err:
        raise LabelledDataError(f"{path}: cannot be read ({err})") from None
    if not tokens:
        raise LabelledDataError(f"{path}: no records")
    try:
        spec = spec or infer_targets(raw, columns.target_names, lines, task, str(path))
        labels = target_arrays(raw, spec, lines, str(path))
    except TargetError as err:
        raise LabelledDataError(str(err)) from None
    return LabelledData(ids, tokens, labels, list(spec.outputs), spec.task, list(spec.columns),
                        texts, spec)


def _encode(vocabulary: Vocabulary, text: str, path: Path, lineno: int) -> np.ndarray:
    """Token ids of one record's sequence or SMILES; errors name the file and line."""
    if not text:
        raise LabelledDataError(f"{path}, line {lineno}: empty sequence")
    if isinstance(vocabulary, Alphabet):
        try:
            return np.asarray(vocabulary.encode(text), dtype=np.uint8)
        except AlphabetError as err:
            raise LabelledDataError(f"{path}, line {lineno}, {err}") from None
    if unknown := vocabulary.unknown_tokens(text):
        raise LabelledDataError(f"{path}, line {lineno}: SMILES {text!r} has tokens outside the "
                                f"model's vocabulary: {' '.join(unknown)}")
    return np.asarray(vocabulary.encode(text), dtype=np.int64)


def missing_notes(data: LabelledData, what: str) -> list[str]:
    """A line counting missing targets per column, if there are any."""
    counts = (~data.known()).sum(0)
    if not counts.any():
        return []
    parts = [f"{n} in '{name}'" for n, name in zip(counts, data.targets) if n]
    return [f"{what}: missing targets ({', '.join(parts)}) are left out of the loss and metrics"]


def _records(path: Path, columns: Columns, sequence: str
             ) -> Iterator[tuple[int, str | None, str, list[str]]]:
    """(line number, id or None, sequence, raw target values) per record of a FASTA file or table."""
    with _open(path) as fh:
        is_fasta = fh.read(1) == ">"
        if not is_fasta:
            fh.seek(0)
            yield from _table_records(fh, path, columns, sequence)
    if is_fasta:
        yield from _fasta_records(path, columns)


def _open(path: Path):
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", newline="") if gz else open(path, newline="")


def _table_records(fh, path: Path, columns: Columns, sequence: str
                   ) -> Iterator[tuple[int, str | None, str, list[str]]]:
    """Records of a CSV/TSV table (the delimiter from its header line); errors name file and line."""
    header_line = fh.readline()
    delimiter = "\t" if "\t" in header_line else ","
    header = [h.strip() for h in next(csv.reader([header_line], delimiter=delimiter), [])]
    wanted = [c for c in (sequence, *columns.target_names, columns.id) if c is not None]
    missing = [c for c in wanted if c not in header]
    if missing:
        raise LabelledDataError(f"{path}, line 1: no column {missing[0]!r} in the header "
                                f"(columns: {', '.join(header) or 'none'})")
    seq_col = header.index(sequence)
    target_cols = [header.index(name) for name in columns.target_names]
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
        yield lineno, name, row[seq_col].strip(), [row[j].strip() for j in target_cols]


def _fasta_records(path: Path, columns: Columns) -> Iterator[tuple[int, str | None, str, list[str]]]:
    """Records of fasta_records whose header carries the targets as NAME=VALUE fields (a record
    may leave some out: they are missing; it must carry at least one), or, for one target, as the
    last '|' field of the name: the Nucleotide Transformer tasks' `.fna` layout, `>name|1`."""
    names = columns.target_names
    for lineno, header, sequence in fasta_records(path):
        fields = header.split()
        values = {}
        for f in fields[1:]:
            key, eq, value = f.partition("=")
            if eq and key in names and key not in values:
                values[key] = value
        if not values and len(names) == 1 and "|" in fields[0]:
            values[names[0]] = fields[0].rsplit("|", 1)[1]
        if not values:
            raise LabelledDataError(f"{path}, line {lineno}: the header has no '{names[0]}=VALUE' "
                                    f"field (expected e.g. '>seq1 {names[0]}=1', or '>seq1|1')")
        yield lineno, fields[0], sequence, [values.get(name, "") for name in names]


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split: (kept, held out) index arrays, sorted.

    Class ids (1-D, -1 for a missing label) are stratified: from each class round(fraction * its
    size) random members are held out, never all of them, so both parts keep every class that has
    at least two members. Multilabel and regression targets (2-D) are split at random.
    """
    if not 0.0 < fraction < 1.0:
        raise LabelledDataError(f"the hold-out fraction must be in (0, 1), got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    groups = [np.arange(len(labels))] if labels.ndim == 2 else \
        [np.flatnonzero(labels == cls) for cls in np.unique(labels)]
    held = []
    for members in groups:
        n = min(int(round(fraction * len(members))), len(members) - 1)
        held.append(rng.permutation(members)[:n])
    held_out = np.sort(np.concatenate(held))
    if held_out.size == 0:
        raise LabelledDataError(f"{len(labels)} records are too few to hold out a fraction of "
                                f"{fraction}")
    kept = np.setdiff1d(np.arange(len(labels)), held_out)
    return kept, held_out
