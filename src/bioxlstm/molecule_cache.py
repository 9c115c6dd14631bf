"""Statistics of a reference or training set of molecules, computed once and cached by content.

Evaluating generated molecules against a 50k-molecule reference spends most of its time on the
reference: canonical SMILES, ChemNet activations for the FCD, properties. Those depend only on the
reference's molecules, so they are stored under a hash of them in the cache directory
($BIOXLSTM_CACHE, else ~/.cache/bioxlstm) and reused by every later evaluation.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bioxlstm.io import atomic_write
from bioxlstm.version import __version__

FORMAT = 1  # bump when what is cached changes


def cache_dir() -> Path:
    """Where cached statistics live."""
    root = os.environ.get("BIOXLSTM_CACHE") or Path.home() / ".cache" / "bioxlstm"
    return Path(root) / "molecules"


def content_key(smiles: Sequence[str], what: str) -> str:
    """A hash of the molecules (in order) and of what is computed from them."""
    digest = hashlib.sha256(f"{what}\n{FORMAT}\n".encode())
    for s in smiles:
        digest.update(s.encode() + b"\n")
    return digest.hexdigest()[:32]


def cached(smiles: Sequence[str], what: str, compute: Callable[[], dict[str, Any]],
           note: Callable[[str], None] | None = None) -> dict[str, Any]:
    """compute() for these molecules, from the cache when it was done before (arrays and JSON-able
    values only); `note` hears one line saying which it was."""
    path = cache_dir() / f"{what}-{content_key(smiles, what)}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["__meta__"]))
                values = {k: data[k] for k in data.files if k != "__meta__"}
            (note or _quiet)(f"{what} of {len(smiles):,} molecules: cached ({path})")
            return {**values, **meta}
        except (OSError, ValueError, KeyError):
            pass  # a broken cache entry is recomputed and replaced
    (note or _quiet)(f"{what} of {len(smiles):,} molecules: computing (cached afterwards)")
    result = compute()
    arrays = {k: v for k, v in result.items() if isinstance(v, np.ndarray)}
    meta = {k: v for k, v in result.items() if k not in arrays}
    meta_text = json.dumps({**meta, "bioxlstm": __version__})
    buffer = io.BytesIO()
    np.savez(buffer, __meta__=np.array(meta_text), **arrays)
    try:
        atomic_write(path, lambda p: p.write_bytes(buffer.getvalue()))
    except OSError as err:  # a read-only home is no reason to fail an evaluation
        print(f"bioxlstm: cannot cache {what} in {path.parent} ({err.strerror})", file=sys.stderr)
    return result


def _quiet(line: str) -> None:
    return None
