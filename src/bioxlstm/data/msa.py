"""Protein families: a3m, aligned FASTA and Stockholm readers, and family directories.

A family keeps each member's unaligned sequence (gaps removed, insertions uppercased, '.' dropped),
which is what homology-aware language models read, and its match-column row, which sequence
weights and profile HMMs need.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path

from bioxlstm.alphabets import PROTEIN
from bioxlstm.errors import BioXLSTMError
from bioxlstm.extras import require

AMINO_ACIDS = "LAGVSERTIDPKQNFYMHWC"
RESIDUES = frozenset(AMINO_ACIDS + "XBUZO")
A3M_SUFFIXES = (".a3m",)
FASTA_SUFFIXES = (".fa", ".fasta", ".afa", ".faa", ".aln")
STOCKHOLM_SUFFIXES = (".sto", ".stk", ".stockholm")
FAMILY_SUFFIXES = A3M_SUFFIXES + FASTA_SUFFIXES + STOCKHOLM_SUFFIXES


class MSAError(BioXLSTMError, ValueError):
    """A family file is missing, empty, malformed or holds letters no protein has."""


@dataclass
class Family:
    """Members of one protein family: names, unaligned sequences and match-column rows.

    `aligned[i]` holds member i's match columns ('-' for a gap), all of one length; it is None for
    unaligned input (a FASTA of unrelated proteins), where no weights or HMM can be built.
    """

    name: str
    names: list[str]
    sequences: list[str]
    aligned: list[str] | None = None

    def __len__(self) -> int:
        return len(self.sequences)

    def encoded(self) -> list[list[int]]:
        """Protein ids of every member (no separators)."""
        return [PROTEIN.encode(seq, record=name) for name, seq in zip(self.names, self.sequences)]


def _open_text(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return raw.decode()
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as err:
        raise MSAError(f"{path}: cannot be read ({err})") from None


def _suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _records(path: Path, text: str) -> list[tuple[str, str]]:
    """(name, row) pairs of a FASTA-like text (a3m or aligned FASTA); '#' lines are skipped."""
    records: list[tuple[str, list[str]]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(">"):
            header = line[1:].split()
            records.append((header[0] if header else f"record_{len(records) + 1}", []))
        elif not records:
            raise MSAError(f"{path}, line {lineno}: sequence before the first '>' header")
        else:
            records[-1][1].append(line)
    if not records:
        raise MSAError(f"{path}: no records (an empty or non-FASTA/a3m file)")
    out = []
    for name, parts in records:
        if not parts:
            raise MSAError(f"{path}: record {name!r} has no sequence")
        out.append((name, "".join(parts)))
    return out


def _check_letters(path: Path, name: str, row: str, allowed: str) -> None:
    for pos, ch in enumerate(row, 1):
        if ch.upper() not in RESIDUES and ch not in allowed:
            raise MSAError(f"{path}: record {name!r}, column {pos}: character {ch!r} is not an "
                           f"amino acid, gap or insertion")


def unaligned(row: str) -> str:
    """The residues of an alignment row: gaps ('-', '.') dropped, insertions uppercased."""
    return row.replace("-", "").replace(".", "").upper()


def match_columns(row: str) -> str:
    """The match columns of an a3m row: uppercase letters and '-' (insertions dropped)."""
    return "".join(ch for ch in row if ch == "-" or ch.isupper())


def _family(path: Path, name: str, records: list[tuple[str, str]], aligned: list[str] | None) -> Family:
    kept = [(n, unaligned(row), a) for (n, row), a in
            zip(records, aligned if aligned is not None else [None] * len(records))]
    empty = [n for n, seq, _ in kept if not seq]
    if len(empty) == len(kept):
        raise MSAError(f"{path}: every record is empty after removing gaps")
    kept = [k for k in kept if k[1]]
    return Family(name, [k[0] for k in kept], [k[1] for k in kept],
                  None if aligned is None else [k[2] for k in kept])


def _check_widths(path: Path, names: list[str], rows: list[str], what: str) -> None:
    width = len(rows[0])
    for name, row in zip(names, rows):
        if len(row) != width:
            raise MSAError(f"{path}: record {name!r} has {len(row)} {what} but the first record "
                           f"{names[0]!r} has {width}; the alignment is inconsistent")


def read_a3m(path: str | Path) -> Family:
    """An a3m family: every record must have the same number of match columns (upper + '-')."""
    path = Path(path)
    records = _records(path, _open_text(path))
    for name, row in records:
        _check_letters(path, name, row, "-.")
    rows = [match_columns(row) for _, row in records]
    _check_widths(path, [n for n, _ in records], rows, "match columns")
    return _family(path, _family_name(path), records, rows)


def read_aligned_fasta(path: str | Path, aligned: bool = True) -> Family:
    """An aligned FASTA family (rows of equal length), or with aligned=False plain sequences."""
    path = Path(path)
    records = _records(path, _open_text(path))
    for name, row in records:
        _check_letters(path, name, row, "-." if aligned else "")
    if not aligned:
        return _family(path, _family_name(path), records, None)
    rows = [row.upper().replace(".", "-") for _, row in records]
    _check_widths(path, [n for n, _ in records], rows, "columns")
    return _family(path, _family_name(path), records, rows)


def read_stockholm(path: str | Path) -> Family:
    """A Stockholm alignment (e.g. a Pfam seed) read with Biopython; '.' and lowercase are inserts."""
    AlignIO = require("Bio.AlignIO", "protein", "reading a Stockholm alignment")

    path = Path(path)
    text = _open_text(path)
    try:
        alignment = AlignIO.read(io.StringIO(text), "stockholm")
    except ValueError as err:
        raise MSAError(f"{path}: not a single Stockholm alignment ({err})") from None
    records = [(rec.id, str(rec.seq)) for rec in alignment]
    if not records:
        raise MSAError(f"{path}: the Stockholm alignment has no sequences")
    for name, row in records:
        _check_letters(path, name, row, "-.")
    rows = [row.upper().replace(".", "-") for _, row in records]
    return _family(path, _family_name(path), records, rows)


def read_family(path: str | Path) -> Family:
    """Read a family file by its suffix: .a3m, .sto/.stockholm, or aligned .fa/.fasta (gzip ok)."""
    path = Path(path)
    if not path.is_file():
        raise MSAError(f"{path}: no such file")
    suffix = _suffix(path)
    if suffix in A3M_SUFFIXES:
        return read_a3m(path)
    if suffix in STOCKHOLM_SUFFIXES:
        return read_stockholm(path)
    if suffix in FASTA_SUFFIXES:
        return read_aligned_fasta(path)
    raise MSAError(f"{path}: unknown family format {suffix!r}; use one of {FAMILY_SUFFIXES} "
                   f"(optionally .gz)")


def _family_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", *FAMILY_SUFFIXES):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _is_family_file(path: Path) -> bool:
    return path.is_file() and _suffix(path) in FAMILY_SUFFIXES


def family_paths(msa_dir: str | Path) -> dict[str, list[Path]]:
    """Families of a directory, by name: each family file, or each subdirectory (OpenProteinSet
    layout, e.g. `<id>/a3m/uniclust30.a3m`) whose family files, found recursively, form one family."""
    root = Path(msa_dir)
    if not root.is_dir():
        raise MSAError(f"{root}: no such directory")
    families: dict[str, list[Path]] = {}
    for entry in sorted(root.iterdir()):
        if _is_family_file(entry):
            families[_family_name(entry)] = [entry]
        elif entry.is_dir():
            files = sorted(p for p in entry.rglob("*") if _is_family_file(p))
            if files:
                families[entry.name] = files
    if not families:
        raise MSAError(f"{root}: no family files ({', '.join(FAMILY_SUFFIXES)}, optionally .gz)")
    return families


def read_family_files(name: str, paths: list[Path]) -> Family:
    """One family from one or more files (their members joined; rows kept only if one file)."""
    parts = [read_family(p) for p in paths]
    if len(parts) == 1:
        parts[0].name = name
        return parts[0]
    return Family(name, [n for f in parts for n in f.names], [s for f in parts for s in f.sequences])


def read_msa_dir(msa_dir: str | Path) -> list[Family]:
    """Every family of a directory (see `family_paths`), sorted by name."""
    return [read_family_files(name, paths) for name, paths in family_paths(msa_dir).items()]
