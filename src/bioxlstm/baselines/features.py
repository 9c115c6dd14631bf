"""Fixed features of sequences and molecules for the linear baselines: k-mer counts, per-position
one-hot codes, and Morgan fingerprints (RDKit), as sparse matrices (scipy) with one row a record.

K-mers and one-hot codes cover the alphabet's letters only (A C G T for DNA, the 20 amino acids for
proteins): a window holding N, X or another code is not counted, so ambiguity letters add nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from bioxlstm.alphabets import DNA, PROTEIN, Alphabet
from bioxlstm.data.msa import AMINO_ACIDS
from bioxlstm.errors import ConfigError
from bioxlstm.extras import require

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

LETTERS = {DNA.name: "ACGT", PROTEIN.name: AMINO_ACIDS}
DEFAULT_K = {DNA.name: 4, PROTEIN.name: 2}
MORGAN_RADIUS, MORGAN_BITS = 2, 2048


def _sparse():  # the scipy.sparse module
    """scipy.sparse, or a one-line error naming the extra."""
    return require("scipy.sparse", "downstream", "the linear baselines")


def letter_index(alphabet: Alphabet) -> np.ndarray:
    """Lookup from token id to letter index 0..n-1 (-1 for ids that are no letter)."""
    letters = LETTERS.get(alphabet.name)
    if letters is None:
        raise ConfigError(f"k-mer and one-hot features need a DNA or protein alphabet, not {alphabet.name}")
    index = np.full(len(alphabet), -1, dtype=np.int64)
    index[[alphabet.id(a) for a in letters]] = np.arange(len(letters))
    return index


def kmer_counts(tokens: Sequence[np.ndarray], alphabet: Alphabet, k: int) -> csr_matrix:
    """(N, n^k) sparse counts of every k-mer of letters in each record."""
    index, n = letter_index(alphabet), len(LETTERS[alphabet.name])
    if not 1 <= k or n ** k > 2 ** 31:
        raise ConfigError(f"--kmer {k} is out of range for {n} letters")
    rows, cols = [], []
    for row, ids in enumerate(tokens):
        idx = index[np.asarray(ids, dtype=np.int64)]
        m = len(idx) - k + 1
        if m <= 0:
            continue
        code, ok = np.zeros(m, dtype=np.int64), np.ones(m, dtype=bool)
        for j in range(k):
            part = idx[j:j + m]
            ok &= part >= 0
            code = code * n + np.maximum(part, 0)
        rows.append(np.full(int(ok.sum()), row))
        cols.append(code[ok])
    return _matrix(rows, cols, (len(tokens), n ** k))


def one_hot(tokens: Sequence[np.ndarray], alphabet: Alphabet) -> csr_matrix:
    """(N, L * n) sparse per-position letter codes, L the longest record (shorter ones end early)."""
    index, n = letter_index(alphabet), len(LETTERS[alphabet.name])
    width = max(len(t) for t in tokens)
    rows, cols = [], []
    for row, ids in enumerate(tokens):
        idx = index[np.asarray(ids, dtype=np.int64)]
        at = np.flatnonzero(idx >= 0)
        rows.append(np.full(len(at), row))
        cols.append(at * n + idx[at])
    return _matrix(rows, cols, (len(tokens), width * n))


def morgan_fingerprints(smiles: Sequence[str], radius: int = MORGAN_RADIUS,
                        bits: int = MORGAN_BITS) -> csr_matrix:
    """(N, bits) sparse Morgan (ECFP) bit vectors; a SMILES RDKit cannot parse gives an empty row."""
    chem = require("rdkit.Chem", "chem", "the Morgan fingerprint baseline")
    generators = require("rdkit.Chem.rdFingerprintGenerator", "chem", "the Morgan fingerprint baseline")
    require("rdkit.RDLogger", "chem", "the Morgan fingerprint baseline").DisableLog("rdApp.*")
    generator = generators.GetMorganGenerator(radius=radius, fpSize=bits)
    rows, cols, unparsed = [], [], 0
    for row, text in enumerate(smiles):
        mol = chem.MolFromSmiles(text)
        if mol is None:
            unparsed += 1
            continue
        on = np.asarray(list(generator.GetFingerprint(mol).GetOnBits()), dtype=np.int64)
        rows.append(np.full(len(on), row))
        cols.append(on)
    if unparsed:
        print(f"warning: RDKit could not parse {unparsed} of {len(smiles)} SMILES; their "
              f"fingerprints are empty", file=sys.stderr)
    return _matrix(rows, cols, (len(smiles), bits))


def _matrix(rows: list[np.ndarray], cols: list[np.ndarray], shape: tuple[int, int]) -> csr_matrix:
    """A CSR matrix summing ones at (rows, cols)."""
    r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    return _sparse().csr_matrix((np.ones(len(r), dtype=np.float64), (r, c)), shape=shape)
