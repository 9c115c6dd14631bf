"""Random access to a reference genome FASTA (plain or bgzip) through pyfaidx."""

from __future__ import annotations

from pathlib import Path

from bioxlstm.errors import BioXLSTMError


class GenomeError(BioXLSTMError, ValueError):
    """A genome file, its index or a requested region is unusable."""


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _is_bgzf(path: Path) -> bool:
    """BGZF is gzip with a 'BC' extra field in every block header."""
    with open(path, "rb") as fh:
        head = fh.read(18)
    return len(head) == 18 and head[3] & 4 and head[12:14] == b"BC"


class Genome:
    """A FASTA genome opened with pyfaidx: `lengths` per chromosome and `fetch` of any region.

    The .fai index (and .gzi for bgzip) is built next to the file when missing. An index that does
    not describe the file is detected and refused rather than read as wrong sequence.
    """

    def __init__(self, path: str | Path) -> None:
        import pyfaidx

        self.path = Path(path)
        if not self.path.is_file():
            raise GenomeError(f"{self.path}: no such genome FASTA")
        if _is_gzip(self.path) and not _is_bgzf(self.path):
            raise GenomeError(f"{self.path}: gzip-compressed but not bgzip; random access needs "
                              f"plain FASTA or bgzip (recompress with `bgzip`, or gunzip it)")
        try:
            self._fasta = pyfaidx.Fasta(str(self.path), sequence_always_upper=True,
                                        read_ahead=1 << 16, as_raw=True, rebuild=True)
        except (pyfaidx.FastaIndexingError, pyfaidx.UnsupportedCompressionFormat, ValueError,
                OSError, RuntimeError) as err:
            raise GenomeError(f"{self.path}: cannot be indexed as FASTA ({err})") from None
        self.lengths = {name: len(record) for name, record in self._fasta.records.items()}
        if not self.lengths:
            raise GenomeError(f"{self.path}: no FASTA records")
        self._check_index()

    def _check_index(self) -> None:
        """Every record's first and last base must be sequence letters, not line breaks or '>'."""
        for name, length in self.lengths.items():
            if length == 0:
                raise GenomeError(f"{self.path}: record {name!r} has no sequence")
            ends = self.fetch(name, 0, 1) + self.fetch(name, length - 1, length)
            if not ends.isalpha():
                raise GenomeError(f"{self.path}: the index {self.path}.fai does not match the "
                                  f"file (record {name!r}); delete it so it is rebuilt")

    def fetch(self, chrom: str, start: int, end: int) -> str:
        """Bases [start, end) of chrom, 0-based half-open, upper case."""
        if chrom not in self.lengths:
            raise GenomeError(f"{self.path}: no chromosome {chrom!r} (it has "
                              f"{', '.join(list(self.lengths)[:5])}{', ...' if len(self.lengths) > 5 else ''})")
        if not 0 <= start < end <= self.lengths[chrom]:
            raise GenomeError(f"{chrom}:{start}-{end} is outside the chromosome "
                              f"(length {self.lengths[chrom]:,})")
        try:
            return str(self._fasta[chrom][start:end])
        except (OSError, ValueError) as err:
            raise GenomeError(f"{self.path}: cannot read {chrom}:{start}-{end} ({err})") from None

    def close(self) -> None:
        self._fasta.close()
