"""SMILES files (.smi / .txt / .csv, gzip allowed) and the RDKit validity filter applied before training."""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bioxlstm.errors import BioXLSTMError
from bioxlstm.extras import require

HEADERS = ("smiles", "canonical_smiles")


class SmilesFileError(BioXLSTMError, ValueError):
    """A SMILES file is missing, unreadable or holds no molecules."""


def read_lines(path: str | Path) -> list[str]:
    """The text lines of a plain or gzip file; SmilesFileError if it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise SmilesFileError(f"{path}: no such file")
    try:
        with open(path, "rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rt") if gz else open(path)) as fh:
            return fh.read().splitlines()
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise SmilesFileError(f"{path}: cannot be read as text ({err})") from None


def entry_smiles(entry: str) -> str:
    """The SMILES of one entry: its first field; names and ids after whitespace, a comma or a tab
    are columns, never part of the molecule (the one grammar of every SMILES reader here)."""
    fields = entry.replace(",", " ").split()
    return fields[0] if fields else ""


def line_molecules(line: str) -> list[str]:
    """The molecules of a domain line: entries joined by '.', each `SMILES [name id ...]`."""
    return [s for s in (entry_smiles(entry) for entry in line.split(".")) if s]


def read_smiles(path: str | Path, keep_empty: bool = False) -> list[str]:
    """One molecule a line (its first field); a 'SMILES' header line is skipped.

    keep_empty: keep blank lines as empty strings (a generated file writes failed samples so, and
    they count as invalid molecules); otherwise blank lines are dropped.
    """
    path = Path(path)
    out = []
    for j, line in enumerate(read_lines(path)):
        smiles = entry_smiles(line)
        if j == 0 and smiles.lower() in HEADERS:
            continue
        if smiles or keep_empty:
            out.append(smiles)
    if not any(out):
        raise SmilesFileError(f"{path}: no SMILES in the file")
    return out


def read_smiles_records(path: str | Path) -> list[tuple[str, str]]:
    """(id, SMILES) per molecule line: the id is the line's second field (a name or id column) when
    there is one, else `mol<line number>`; a 'SMILES' header line is skipped."""
    records = []
    for j, line in enumerate(read_lines(path), 1):
        fields = line.replace(",", " ").split()
        if not fields or (j == 1 and fields[0].lower() in HEADERS):
            continue
        records.append((fields[1] if len(fields) > 1 else f"mol{j}", fields[0]))
    if not records:
        raise SmilesFileError(f"{path}: no SMILES in the file")
    return records


def read_domains(path: str | Path) -> list[list[str]]:
    """Molecular domains, one per line as its molecules joined by '.' (the Chem-xLSTM ICL format);
    each entry may carry name and id columns after its SMILES, which are dropped."""
    path = Path(path)
    domains = [line_molecules(line) for line in read_lines(path) if line.strip()]
    domains = [d for d in domains if d]
    if not domains:
        raise SmilesFileError(f"{path}: no domains in the file")
    return domains


@dataclass
class ValiditySummary:
    """What the RDKit filter kept and dropped; `examples` holds the first few rejected strings."""

    total: int = 0
    invalid: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def kept(self) -> int:
        return self.total - self.invalid

    def line(self, what: str = "molecules") -> str:
        shown = ", ".join(repr(s) for s in self.examples)
        tail = f" (e.g. {shown})" if self.invalid else ""
        return f"{what}: {self.total:,} read, {self.kept:,} kept, {self.invalid:,} invalid skipped{tail}"


def parse_molecule(smiles: str):
    """The RDKit molecule of `smiles`, or None when it does not parse (an empty string never does)."""
    require("rdkit", "chem", "reading SMILES")
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    return Chem.MolFromSmiles(smiles) if smiles else None


def valid_smiles(smiles: Iterable[str], summary: ValiditySummary | None = None,
                 max_examples: int = 3) -> tuple[list[str], ValiditySummary]:
    """The strings RDKit parses, unchanged and in order, and a summary of those it rejects.

    Pass `summary` to add the counts to an existing one (several files or domains, one summary).
    """
    summary = ValiditySummary() if summary is None else summary
    kept = []
    for s in smiles:
        summary.total += 1
        if parse_molecule(s) is None:
            summary.invalid += 1
            if len(summary.examples) < max_examples:
                summary.examples.append(s)
        else:
            kept.append(s)
    return kept, summary
