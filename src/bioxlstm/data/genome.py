"""Random access to a reference genome FASTA (plain or bgzip) through pyfaidx."""

from __future__ import annotations

import bisect
import zlib
from pathlib import Path

from bioxlstm.errors import BioXLSTMError
from bioxlstm.extras import require

_READ_ERRORS = (OSError, ValueError, IndexError, EOFError, zlib.error)
_MAX_HEADER = 1 << 16  # the index check reads header lines up to this long; longer ones are refused


class GenomeError(BioXLSTMError, ValueError):
    """A genome file, its index or a requested region is unusable."""


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def _ustart(block) -> int:
    """Where a bgzip block starts in the uncompressed file."""
    return block.ustart


def _is_sequence(text: str) -> bool:
    """Sequence letters only: no line break, space or '>' (a misplaced index reads those)."""
    return bool(text) and ">" not in text and not any(c.isspace() for c in text)


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
        pyfaidx = require("pyfaidx", "dna", "reading a genome FASTA")

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
            raise GenomeError(f"{self.path}: cannot be indexed as FASTA ({_one_line(err)}); if "
                              f"{self.path}.fai is stale, delete it so it is rebuilt") from None
        self.lengths = {name: len(record) for name, record in self._fasta.records.items()}
        if not self.lengths:
            raise GenomeError(f"{self.path}: no FASTA records")
        self._check_index()

    def _check_index(self) -> None:
        """Refuse an index that does not describe the file: a stale .fai newer than the FASTA
        (copied, or written for another file) would otherwise be read as wrong bases."""
        for name, length in self.lengths.items():
            if length == 0:
                raise GenomeError(f"{self.path}: record {name!r} has no sequence")
            try:
                matches = self._record_matches(name, length)
            except (GenomeError, *_READ_ERRORS):
                matches = False
            if not matches:
                raise GenomeError(f"{self.path}: the index {self.path}.fai does not match the "
                                  f"file (record {name!r}); delete it so it is rebuilt")

    def _record_matches(self, name: str, length: int) -> bool:
        """The record's header line ends right before its first base, and its first line break
        and the break after its last base sit where the index puts them."""
        rec = self._fasta.faidx.index[name]
        if not 0 < rec.lenc <= rec.lenb <= rec.lenc + 2:
            return False
        back = 256
        head = self._raw(max(rec.offset - back, 0), rec.offset)
        while "\n" not in head[:-1] and back < min(rec.offset, _MAX_HEADER):
            back *= 16
            head = self._raw(max(rec.offset - back, 0), rec.offset)
        header = head[:-1].rsplit("\n", 1)[-1].rstrip("\r")
        if not head.endswith("\n") or header.split()[:1] != [f">{name}"]:
            return False
        first = self._raw(rec.offset, rec.offset + min(length, rec.lenc))
        if length > rec.lenc:
            breaks = self._raw(rec.offset + rec.lenc, rec.offset + rec.lenb)
            first += self._raw(rec.offset + rec.lenb, rec.offset + rec.lenb + 1)
            if breaks.strip() or len(breaks) != rec.lenb - rec.lenc:
                return False
        last = rec.offset + (length - 1) // rec.lenc * rec.lenb + (length - 1) % rec.lenc
        tail = self._raw(last, last + 2)
        return _is_sequence(first) and _is_sequence(tail[:1]) and not tail[1:].strip()

    def _raw(self, start: int, end: int) -> str:
        """Characters [start, end) of the uncompressed file, line breaks included."""
        faidx = self._fasta.faidx
        with faidx.lock:
            if faidx._bgzf:
                make_virtual_offset = require("Bio.bgzf", "dna", "reading a bgzip genome").make_virtual_offset

                blocks = faidx.gzi_index
                block = blocks[max(bisect.bisect_right(blocks, start, key=_ustart) - 1, 0)]
                faidx.file.seek(make_virtual_offset(block.cstart, start - block.ustart))
            else:
                faidx.file.seek(start)
            return faidx.file.read(end - start).decode()

    def fetch(self, chrom: str, start: int, end: int) -> str:
        """Bases [start, end) of chrom, 0-based half-open, upper case."""
        if chrom not in self.lengths:
            names = ", ".join(list(self.lengths)[:5]) + (", ..." if len(self.lengths) > 5 else "")
            raise GenomeError(f"{self.path}: no chromosome {chrom!r} (it has {names})")
        if not 0 <= start < end <= self.lengths[chrom]:
            raise GenomeError(f"{chrom}:{start}-{end} is outside the chromosome "
                              f"(length {self.lengths[chrom]:,})")
        try:
            bases = str(self._fasta[chrom][start:end])
        except _READ_ERRORS as err:
            raise GenomeError(f"{self.path}: cannot read {chrom}:{start}-{end} "
                              f"({_one_line(err)})") from None
        if len(bases) != end - start:
            raise GenomeError(f"{self.path}: read {len(bases)} bases for {chrom}:{start}-{end}; "
                              f"the index {self.path}.fai does not match the file, delete it")
        return bases

    def close(self) -> None:
        self._fasta.close()
