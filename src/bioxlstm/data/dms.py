"""Deep mutational scans: ProteinGym-style substitution tables and their checks against a sequence.

A table is CSV or TSV (gzip ok) with a `mutant` column (`A23V`, multi-mutants `A23V:G45W`) and a
score column (ProteinGym: `DMS_score`); a file without a header is a plain list of mutants, one per
line, scored without a measurement. Positions count from `first_position` (1 by default).
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

from bioxlstm.data.msa import AMINO_ACIDS
from bioxlstm.errors import BioXLSTMError

MUTATION = re.compile(r"^([A-Za-z])(-?\d+)([A-Za-z])$")


class AssayError(BioXLSTMError, ValueError):
    """An assay file is missing, empty or lacks the columns it needs."""


@dataclass
class Assay:
    """Mutant strings and (when measured) their scores, in file order."""

    path: Path
    mutants: list[str]
    scores: list[float] | None


@dataclass
class Variant:
    """A checked mutant: status 'ok' with 0-based (position, wt, mut) triples, or why not."""

    mutant: str
    status: str
    message: str = ""
    substitutions: tuple[tuple[int, str, str], ...] = ()


def _text(path: Path) -> str:
    try:
        raw = path.read_bytes()
        return (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as err:
        raise AssayError(f"{path}: cannot be read ({err})") from None


MISSING = {"", "na", "nan", "n/a", "none", "null", ".", "-"}  # a row measured nothing


def read_assay(path: str | Path, score_column: str = "DMS_score") -> Assay:
    """Read a substitution table (or a plain list of mutants); see the module docstring."""
    path = Path(path)
    if not path.is_file():
        raise AssayError(f"{path}: no such file")
    lines = [line for line in _text(path).splitlines() if line.strip()]
    if not lines:
        raise AssayError(f"{path}: empty assay file")
    delimiter = "\t" if "\t" in lines[0] else ","
    rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter))
    header = [h.strip() for h in rows[0]]
    if MUTATION.match(header[0].split(":")[0]):
        return Assay(path, [row[0].strip() for row in rows], None)
    lowered = [h.lower() for h in header]
    if "mutant" not in lowered:
        raise AssayError(f"{path}: no 'mutant' column (columns: {', '.join(header)})")
    if score_column not in header:
        raise AssayError(f"{path}: no score column {score_column!r} (columns: {', '.join(header)}); "
                         f"name the measured column with --score-column")
    mcol, scol = lowered.index("mutant"), header.index(score_column)
    mutants, scores = [], []
    for lineno, row in enumerate(rows[1:], 2):
        if len(row) <= max(mcol, scol):
            raise AssayError(f"{path}, line {lineno}: {len(row)} fields, expected {len(header)}")
        try:
            score = math.nan if row[scol].strip().lower() in MISSING else float(row[scol])
        except ValueError:
            raise AssayError(f"{path}, line {lineno}: score {row[scol]!r} is not a number") from None
        mutants.append(row[mcol].strip())
        scores.append(score)
    if not mutants:
        raise AssayError(f"{path}: no variants")
    return Assay(path, mutants, scores)


def check_mutant(mutant: str, wild_type: str, first_position: int = 1) -> Variant:
    """Parse `A23V` or `A23V:G45W` against the wild type; never raises for a bad row."""
    subs = []
    for part in mutant.split(":"):
        match = MUTATION.match(part.strip())
        if not match:
            return Variant(mutant, "invalid", f"{part!r} is not a substitution like A23V")
        wt, pos, mt = match.group(1).upper(), int(match.group(2)), match.group(3).upper()
        index = pos - first_position
        if not 0 <= index < len(wild_type):
            return Variant(mutant, "off_sequence",
                           f"position {pos} is outside the sequence ({first_position}.."
                           f"{first_position + len(wild_type) - 1})")
        if wild_type[index] != wt:
            return Variant(mutant, "wt_mismatch",
                           f"position {pos} is {wild_type[index]} in the wild type, not {wt}")
        if mt not in AMINO_ACIDS:
            return Variant(mutant, "unsupported", f"{mt!r} is not one of the 20 amino acids")
        subs.append((index, wt, mt))
    if all(wt == mt for _, wt, mt in subs):
        return Variant(mutant, "synonymous", "no amino acid changes: scored 0 and left out of the "
                       "correlation", substitutions=tuple(subs))
    return Variant(mutant, "ok", substitutions=tuple(subs))
