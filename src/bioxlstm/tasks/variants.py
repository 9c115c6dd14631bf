"""Variant tables (TSV, CSV or VCF-like) and the reference/alternative windows around each variant.

A table needs columns chrom, pos (1-based, as in VCF), ref and alt, matched case-insensitively
(`#CHROM` works, `##` meta lines are skipped). Substitutions of any length with len(ref) == len(alt)
are scored; indels, multi-allelic and symbolic alleles are skipped with a status, and so are rows
whose ref disagrees with the genome or that fall off it. Skipped rows never stop the run.
"""

from __future__ import annotations

import csv
import gzip
import re
from dataclasses import dataclass
from pathlib import Path

from bioxlstm.data.genome import Genome
from bioxlstm.errors import BioXLSTMError

COLUMNS = {"chrom": ("chrom", "chr", "chromosome"), "pos": ("pos", "position"),
           "ref": ("ref",), "alt": ("alt",)}
BASES = re.compile(r"[ACGTN]+")


class VariantTableError(BioXLSTMError, ValueError):
    """A variant table is missing or lacks a required column."""


@dataclass
class VariantTable:
    """The table as read: header and rows of text (rows keep all their columns for the output)."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    columns: dict[str, int]


@dataclass
class VariantCheck:
    """A row's status ('ok' or why it is skipped) and, when ok, its ref and alt windows."""

    status: str
    message: str = ""
    ref_window: str = ""
    alt_window: str = ""


def read_variant_table(path: str | Path) -> VariantTable:
    """Read a tab- or comma-separated table (plain or gzip), finding the four required columns."""
    path = Path(path)
    if not path.is_file():
        raise VariantTableError(f"{path}: no such file")
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(path, "rt", newline="") if gz else open(path, newline="")) as fh:
            lines = [(n, line.rstrip("\r\n")) for n, line in enumerate(fh, 1)]
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise VariantTableError(f"{path}: cannot be read ({err})") from None
    lines = [(n, line) for n, line in lines if line.strip() and not line.startswith("##")]
    if not lines:
        raise VariantTableError(f"{path}: no header line")
    header_no, header_line = lines[0]
    delimiter = "\t" if "\t" in header_line else ","
    parsed = csv.reader([line for _, line in lines], delimiter=delimiter)
    header = [h.strip() for h in next(parsed)]
    names = [h.lstrip("#").lower() for h in header]
    columns = {}
    for key, aliases in COLUMNS.items():
        found = [j for j, name in enumerate(names) if name in aliases]
        if not found:
            raise VariantTableError(f"{path}, line {header_no}: no {key!r} column (need chrom, pos, "
                                    f"ref, alt; found {', '.join(header)})")
        columns[key] = found[0]
    rows = [[field.strip() for field in row] for row in parsed]
    return VariantTable(path, header, rows, columns)


def check_variant(genome: Genome, row: list[str], table: VariantTable, window: int) -> VariantCheck:
    """Validate one row against the genome and cut its windows of `window` bases (clipped at ends)."""
    if len(row) != len(table.header):
        return VariantCheck("malformed", f"{len(row)} fields, the header has {len(table.header)}")
    chrom, pos, ref, alt = (row[table.columns[k]] for k in ("chrom", "pos", "ref", "alt"))
    ref, alt = ref.upper(), alt.upper()
    if "," in alt:
        return VariantCheck("multiallelic", "split multi-allelic rows first (bcftools norm -m-)")
    if not BASES.fullmatch(ref) or not BASES.fullmatch(alt):
        if re.fullmatch(r"[ACGTN]*", ref + alt) or ref in ("-", ".") or alt in ("-", ".", "*"):
            return VariantCheck("indel", "insertions and deletions are not scored")
        return VariantCheck("invalid_allele", f"alleles {ref!r}/{alt!r} are not A, C, G, T, N")
    if len(ref) != len(alt):
        return VariantCheck("indel", "insertions and deletions are not scored")
    if chrom not in genome.lengths:
        return VariantCheck("unknown_chrom", f"the genome has no chromosome {chrom!r}")
    try:
        start = int(pos) - 1
    except ValueError:
        return VariantCheck("bad_pos", f"position {pos!r} is not an integer")
    length = genome.lengths[chrom]
    if start < 0 or start + len(ref) > length:
        return VariantCheck("off_chrom", f"{chrom}:{pos} is outside 1..{length}")
    left = start - max(window - len(ref), 0) // 2
    lo, hi = max(left, 0), min(left + max(window, len(ref)), length)
    seq = genome.fetch(chrom, lo, hi)
    at = start - lo
    if seq[at:at + len(ref)] != ref:
        return VariantCheck("ref_mismatch",
                            f"the genome has {seq[at:at + len(ref)]} at {chrom}:{pos}, not {ref}")
    return VariantCheck("ok", "", seq, seq[:at] + alt + seq[at + len(ref):])
