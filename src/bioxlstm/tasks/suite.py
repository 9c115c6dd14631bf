"""Task suites on disk: one subdirectory per task with its training and test data.

Two layouts are read. Tables (the Nucleotide Transformer downstream tasks, the bundled suite):
`TASK/train.csv` and `TASK/test.csv` (also .tsv, .fa/.fasta/.fna, each optionally .gz) in the format of
`bioxlstm.data.labelled`. Genomic Benchmarks' own download: `TASK/train/CLASS/*.txt` and
`TASK/test/CLASS/*.txt`, one sequence a file, the folder naming the class; these are gathered
once into `train.csv` / `test.csv` tables (id, sequence, label) under the run's data folder.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bioxlstm.errors import BioXLSTMError
from bioxlstm.io import atomic_write

SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".fa", ".fa.gz", ".fasta", ".fasta.gz", ".fna",
            ".fna.gz")
LAYOUTS = ("table", "genomic-benchmarks")


class SuiteError(BioXLSTMError, ValueError):
    """A suite directory or one of its tasks does not follow a layout bioxlstm reads."""


@dataclass(frozen=True)
class SuiteTask:
    """One task: its name (the subdirectory), training and test data, and the layout they came in."""

    name: str
    train: Path
    test: Path
    layout: str = "table"


def find_tasks(suite: str | Path, names: Sequence[str] | None = None) -> list[SuiteTask]:
    """The tasks of a suite directory, by name; `names` picks some (unknown names are refused)."""
    suite = Path(suite)
    if not suite.is_dir():
        raise SuiteError(f"{suite}: no such suite directory")
    folders = sorted(p for p in suite.iterdir() if p.is_dir() and not p.name.startswith("."))
    if names:
        unknown = sorted(set(names) - {p.name for p in folders})
        if unknown:
            raise SuiteError(f"{suite}: no task {unknown[0]!r} (tasks: "
                             f"{', '.join(p.name for p in folders) or 'none'})")
        folders = [p for p in folders if p.name in set(names)]
    tasks = [_task(folder) for folder in folders]
    if not tasks:
        raise SuiteError(f"{suite}: no task subdirectories (expected TASK/train.csv and TASK/test.csv, "
                         f"or Genomic Benchmarks' TASK/train/CLASS/*.txt)")
    return tasks


def _task(folder: Path) -> SuiteTask:
    """A task folder in either layout; refused with what was expected when it is neither."""
    tables = [_table(folder, part) for part in ("train", "test")]
    if all(tables):
        return SuiteTask(folder.name, tables[0], tables[1], "table")
    if all((folder / part).is_dir() for part in ("train", "test")):
        return SuiteTask(folder.name, folder / "train", folder / "test", "genomic-benchmarks")
    missing = "train" if tables[0] is None else "test"
    raise SuiteError(f"{folder}: no {missing} data (expected {missing}.csv, .tsv or .fa, optionally "
                     f".gz, or Genomic Benchmarks' {missing}/CLASS/*.txt folders)")


def _table(folder: Path, part: str) -> Path | None:
    """The first PART.SUFFIX table file of the folder, if any."""
    for suffix in SUFFIXES:
        if (folder / f"{part}{suffix}").is_file():
            return folder / f"{part}{suffix}"
    return None


def as_tables(task: SuiteTask, data_dir: Path) -> SuiteTask:
    """The task with table files: a Genomic Benchmarks task is gathered into data_dir/TASK/ once
    (kept for resumed runs); a table task is returned as it is."""
    if task.layout == "table":
        return task
    out = data_dir / task.name
    paths = []
    for part, folder in (("train", task.train), ("test", task.test)):
        path = out / f"{part}.csv"
        if not path.is_file():
            out.mkdir(parents=True, exist_ok=True)
            rows = _class_folders(folder)
            atomic_write(path, lambda p, rows=rows: _write_rows(p, rows))
        paths.append(path)
    return SuiteTask(task.name, paths[0], paths[1], "table")


def _class_folders(folder: Path) -> list[tuple[str, str, str]]:
    """(id, sequence, class) of every CLASS/*.txt file under folder, sorted by class and name."""
    rows = []
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise SuiteError(f"{folder}: no class folders (Genomic Benchmarks: {folder.name}/CLASS/*.txt)")
    for cls in classes:
        for path in sorted(cls.glob("*.txt")):
            sequence = "".join(path.read_text().split())
            if not sequence:
                raise SuiteError(f"{path}: empty sequence file")
            rows.append((f"{cls.name}/{path.stem}", sequence, cls.name))
    return rows


def _write_rows(path: Path, rows: list[tuple[str, str, str]]) -> None:
    """A table of id, sequence, label."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "sequence", "label"])
        writer.writerows(rows)
