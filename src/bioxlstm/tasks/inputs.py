"""Whole sequences as model input and per-sequence outputs, shared by finetune, embed and score.

Each sequence is fed as `[separator] + bases`, the way pretraining saw record starts, so every base
has a left context and the first base is scored too; pooled features average the bases' hidden
states (the separator position is left out). Batches are right-padded with explicit lengths.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bioxlstm.alphabets import DNA, PROTEIN, Alphabet
from bioxlstm.checkpoint import load_config
from bioxlstm.config import ModelConfig
from bioxlstm.convert import find_official, official_tokenizer
from bioxlstm.devices import resolve_device
from bioxlstm.errors import BioXLSTMError, ConfigError
from bioxlstm.model import XLSTMLanguageModel
from bioxlstm.pooling import base_mask
from bioxlstm.vocabulary import Vocabulary, vocabulary_for


class SequenceTooLongError(BioXLSTMError, ValueError):
    """A sequence is longer than a model that cannot run in pieces may take at once."""


def load_model(checkpoint: str | Path, device: str = "auto", smiles: bool = False
               ) -> tuple[XLSTMLanguageModel, Vocabulary]:
    """A checkpoint's model in eval mode on `device`, and its vocabulary; a SMILES model is refused
    unless the caller reads molecules (`smiles`), since the others read FASTA sequences."""
    model = XLSTMLanguageModel.from_pretrained(checkpoint).to(resolve_device(device)).eval()
    directory = checkpoint if Path(checkpoint).is_dir() else None
    vocabulary = official_tokenizer(checkpoint) or vocabulary_for(model.config, directory)
    if smiles != (not isinstance(vocabulary, Alphabet)):
        if smiles:
            raise ConfigError(f"{checkpoint} is a {vocabulary.name} model; --smiles needs a SMILES "
                              "model (use --fasta for sequences)")
        raise ConfigError(f"{checkpoint} is a {vocabulary.name} model, and this command reads FASTA "
                          "sequences (DNA or protein); for molecules use `bioxlstm generate` and "
                          "`bioxlstm evaluate-molecules`")
    return model, vocabulary


def checkpoint_vocabulary(checkpoint: str | Path) -> Vocabulary:
    """The vocabulary a checkpoint's model reads, without loading its weights: an official
    checkpoint's (converted on the fly elsewhere), or a bioxlstm checkpoint's own."""
    official = find_official(checkpoint)
    if official is not None:
        return official_tokenizer(checkpoint) or (DNA if official.family == "dna" else PROTEIN)
    return vocabulary_for(load_config(checkpoint), checkpoint)


def can_run_in_pieces(config: ModelConfig) -> bool:
    """Whether outputs at a position depend only on the past, so a long input may run in pieces."""
    return not config.bidirectional and not config.rc_equivariant


def pad_batch(sequences: Sequence[Sequence[int] | np.ndarray], vocabulary: Vocabulary,
              device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """(B, S) ids of `[bos] + sequence` per row, right-padded, and each row's length."""
    sep, pad = vocabulary.bos_id, vocabulary.pad_id
    lengths = torch.tensor([len(s) + 1 for s in sequences], dtype=torch.long)
    ids = torch.full((len(sequences), int(lengths.max())), pad, dtype=torch.long)
    ids[:, 0] = sep
    for row, seq in enumerate(sequences):
        ids[row, 1:len(seq) + 1] = torch.as_tensor(np.asarray(seq, dtype=np.int64))
    return ids.to(device), lengths.to(device)


def length_batches(lengths: Sequence[int], batch_size: int, chunk_tokens: int) -> list[list[int]]:
    """Indices grouped into batches, longest first, for padding that stays cheap.

    A batch has at most batch_size rows and at most batch_size x chunk_tokens padded tokens, so one
    long record never drags short ones through its full length (a longer record goes alone).
    """
    budget = batch_size * chunk_tokens
    batches: list[list[int]] = []
    for j in sorted(range(len(lengths)), key=lambda k: -lengths[k]):
        if batches and len(batches[-1]) < batch_size and \
                (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= budget:
            batches[-1].append(j)
        else:
            batches.append([j])
    return batches


def hidden_pieces(model: XLSTMLanguageModel, ids: Tensor, lengths: Tensor,
                  chunk_tokens: int) -> Iterator[tuple[int, Tensor]]:
    """(start, hidden) over ids in pieces of chunk_tokens, carrying the recurrent state.

    A model that sees the whole sequence at once (bidirectional, RC-equivariant) runs in one piece
    and refuses inputs longer than chunk_tokens instead of running out of memory.
    """
    if ids.shape[1] <= chunk_tokens:
        yield 0, model(ids, lengths=lengths).hidden
        return
    if not can_run_in_pieces(model.config):
        raise SequenceTooLongError(
            f"a sequence of {ids.shape[1] - 1:,} bases is longer than the chunk limit allows "
            f"({chunk_tokens - 1:,} bases + separator), and this model sees the whole sequence at "
            f"once so it cannot run in pieces; raise --chunk-tokens if memory allows")
    state = None
    for start in range(0, ids.shape[1], chunk_tokens):
        out = model(ids[:, start:start + chunk_tokens], state=state, return_state=True)
        state = out.state
        yield start, out.hidden


@torch.no_grad()
def pooled_embeddings(model: XLSTMLanguageModel, ids: Tensor, lengths: Tensor, chunk_tokens: int,
                      keep_tokens: bool = False, on_piece: Callable[[int], object] | None = None
                      ) -> tuple[Tensor, list[Tensor] | None]:
    """Mean-pooled features (B, d) float32 and, if asked, each row's per-base features (L, d) on CPU.

    The pooled sum accumulates piece by piece, so memory stays bounded by chunk_tokens however long
    the sequences are. `on_piece(bases)` is called after each piece with its number of bases.
    """
    total = torch.zeros((), dtype=torch.float64, device=ids.device)
    parts: list[list[Tensor]] | None = [[] for _ in range(ids.shape[0])] if keep_tokens else None
    for start, hidden in hidden_pieces(model, ids, lengths, chunk_tokens):
        mask = base_mask(lengths, start, hidden.shape[1])
        total = total + (hidden.double() * mask.unsqueeze(-1)).sum(1)
        if parts is not None:
            for row, rows in enumerate(parts):
                rows.append(hidden[row, mask[row]].float().cpu())
        if on_piece is not None:
            on_piece(int(mask.sum()))
    pooled = (total / (lengths - 1).clamp(min=1).unsqueeze(1)).float()
    return pooled, None if parts is None else [torch.cat(rows) for rows in parts]
