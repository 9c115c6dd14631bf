"""Plain or gzip-compressed FASTA files of independent sequences, read record by record."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

from bioxlstm.errors import BioXLSTMError


class FastaError(BioXLSTMError, ValueError):
    """A FASTA file is missing, empty or malformed."""


def _open(path: Path):
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt") if gz else open(path)


def fasta_records(path: str | Path) -> Iterator[tuple[int, str, str]]:
    """Yield (line number of the header, header text after '>', sequence) per record."""
    path = Path(path)
    if not path.is_file():
        raise FastaError(f"{path}: no such file")
    header, parts, at = None, [], 0
    try:
        with _open(path) as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.strip()
                if not line or line.startswith(";"):
                    continue
                if line.startswith(">"):
                    if header is not None:
                        yield at, header, _joined(path, header, parts)
                    header, parts, at = line[1:].strip(), [], lineno
                    continue
                if header is None:
                    raise FastaError(f"{path}, line {lineno}: sequence before the first '>' header")
                parts.append(line)
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise FastaError(f"{path}: cannot be read as FASTA ({err})") from None
    if header is None:
        raise FastaError(f"{path}: no FASTA records")
    yield at, header, _joined(path, header, parts)


def read_fasta(path: str | Path) -> Iterator[tuple[str, str]]:
    """Yield (name, sequence) per record; name is the header up to the first space."""
    for _, header, sequence in fasta_records(path):
        yield (header.split() or [""])[0], sequence


def _joined(path: Path, header: str, parts: list[str]) -> str:
    if not parts:
        name = (header.split() or [""])[0]
        raise FastaError(f"{path}: record {name!r} has no sequence")
    return "".join(parts)
