"""Per-sequence (mean-pooled) and optional per-token embeddings of a FASTA file's records, or of a
SMILES file's molecules (one a line, optional name column) with a SMILES model.

Pooled output: `.npy` (float32, N x d, row i = record i) with the record ids in `<name>.ids.txt`,
or `.parquet` (columns `id`, `embedding`; needs pyarrow). Per-base output: `.npz` keyed by record
id, array (length, d). Long sequences run in pieces of chunk_tokens carrying the recurrent state, so
pooled embeddings of a chromosome need memory for one piece only.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from bioxlstm.data.fasta import read_fasta
from bioxlstm.data.smiles import read_smiles_records
from bioxlstm.errors import BioXLSTMError, ConfigError
from bioxlstm.io import atomic_write, check_output_file
from bioxlstm.tasks.inputs import length_batches, load_model, pad_batch, pooled_embeddings
from bioxlstm.vocabulary import Vocabulary

POOLED_FORMATS = (".npy", ".parquet")


class EmbedOutputError(BioXLSTMError, ValueError):
    """An output path has an unsupported format, or its writer is not installed."""


@dataclass
class EmbedConfig:
    """Batching and device settings; chunk_tokens bounds the tokens run at once per sequence."""

    batch_size: int = 16
    chunk_tokens: int = 4096
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        for name, least in (("batch_size", 1), ("chunk_tokens", 2)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ConfigError(f"embed field '{name}' must be an integer of at least {least}, "
                                  f"got {value!r}")


@dataclass
class EmbedResult:
    """How many records were embedded, the embedding width and the files written."""

    records: int
    dim: int
    files: list[Path]


def embed_fasta(fasta: str | Path, checkpoint: str | Path, out: str | Path,
                per_token: str | Path | None = None, config: EmbedConfig | None = None,
                smiles: str | Path | None = None) -> EmbedResult:
    """Embed every record of `fasta` (or every molecule of a `smiles` file, with a SMILES model)
    with the checkpoint's model; see the module doc for formats."""
    config = config or EmbedConfig()
    if (fasta is None) == (smiles is None):
        raise ConfigError("embed reads one input: --fasta (sequences) or --smiles (molecules)")
    out = Path(out)
    if out.suffix not in POOLED_FORMATS:
        raise EmbedOutputError(f"{out}: the pooled output must end in {' or '.join(POOLED_FORMATS)}")
    if per_token is not None and Path(per_token).suffix != ".npz":
        raise EmbedOutputError(f"{per_token}: the per-token output must end in .npz")
    if out.suffix == ".parquet":
        _require_pyarrow()
    check_output_file(out, "--out")
    if per_token is not None:
        check_output_file(per_token, "--per-token")
    model, alphabet = load_model(checkpoint, config.device, smiles=smiles is not None)
    names, tokens = _records(alphabet, fasta, smiles)
    if per_token is not None:
        _check_unique(names, fasta or smiles)
    device = next(model.parameters()).device
    pooled: list[np.ndarray | None] = [None] * len(tokens)
    bar = tqdm(total=sum(len(t) for t in tokens), unit="bp", unit_scale=True, dynamic_ncols=True,
               desc="embed", disable=None if config.progress else True)
    token_zip = _NpzWriter(Path(per_token)) if per_token is not None else None
    try:
        for batch in length_batches([len(t) for t in tokens], config.batch_size,
                                    config.chunk_tokens):
            ids, lengths = pad_batch([tokens[k] for k in batch], alphabet, device)
            vectors, per_base = pooled_embeddings(model, ids, lengths, config.chunk_tokens,
                                                  keep_tokens=token_zip is not None,
                                                  on_piece=bar.update)
            for k, vector in zip(batch, vectors.cpu().numpy()):
                pooled[k] = vector
            for k, rows in zip(batch, per_base or []):
                token_zip.add(names[k], rows.numpy())
        if token_zip is not None:
            token_zip.commit()
    finally:
        bar.close()
        if token_zip is not None:
            token_zip.discard()
    matrix = np.stack(pooled).astype(np.float32)
    _write_pooled(out, names, matrix)
    files = [out, out.with_suffix(".ids.txt")] if out.suffix == ".npy" else [out]
    return EmbedResult(len(names), matrix.shape[1], files + ([Path(per_token)] if per_token else []))


def _records(vocabulary: Vocabulary, fasta: str | Path | None,
             smiles: str | Path | None) -> tuple[list[str], list[np.ndarray]]:
    """Record ids and token ids of a FASTA file's records or a SMILES file's molecules."""
    if fasta is not None:
        pairs = [(name, vocabulary.encode(seq, record=name)) for name, seq in read_fasta(fasta)]
    else:
        pairs = []
        for name, text in read_smiles_records(smiles):
            if unknown := vocabulary.unknown_tokens(text):
                raise ConfigError(f"{smiles}: molecule {name} ({text}) has tokens outside the "
                                  f"model's vocabulary: {' '.join(unknown)}")
            pairs.append((name, vocabulary.encode(text)))
    return [n for n, _ in pairs], [np.asarray(ids, dtype=np.int64) for _, ids in pairs]


def _check_unique(names: list[str], fasta: str | Path) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise EmbedOutputError(f"{fasta}: record id {name!r} occurs twice; per-token output "
                                   f"is keyed by id, so ids must be unique")
        seen.add(name)


class _NpzWriter:
    """An .npz written array by array into a temporary file, renamed into place on commit.

    Per-token outputs thus never all sit in memory, and a failed run leaves no partial file.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.tmp = path, path.with_name(f".{path.name}.tmp")
        self.zip: zipfile.ZipFile | None = zipfile.ZipFile(self.tmp, "w", allowZip64=True)

    def add(self, key: str, array: np.ndarray) -> None:
        with self.zip.open(f"{key}.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array(fh, array)

    def commit(self) -> None:
        self.zip.close()
        self.zip = None
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        """Drop the temporary file unless commit() already moved it into place."""
        if self.zip is not None:
            self.zip.close()
            self.tmp.unlink(missing_ok=True)


def _write_pooled(out: Path, names: list[str], pooled: np.ndarray) -> None:
    if out.suffix == ".npy":
        atomic_write(out, lambda p: _save_npy(p, pooled))
        atomic_write(out.with_suffix(".ids.txt"), lambda p: p.write_text("".join(f"{n}\n" for n in names)))
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": pa.array(names, pa.string()),
                      "embedding": pa.array(list(pooled), pa.list_(pa.float32()))})
    atomic_write(out, lambda p: pq.write_table(table, str(p)))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, array)


def _require_pyarrow() -> None:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise EmbedOutputError("writing .parquet needs pyarrow (pip install pyarrow); or write "
                               ".npy instead") from None
