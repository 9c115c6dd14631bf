"""Causal-LM pretraining on the records of a FASTA file, for any fixed alphabet."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from bioxlstm.alphabets import Alphabet, get_alphabet
from bioxlstm.config import ModelConfig
from bioxlstm.data.batches import TokenWindows, eval_batches
from bioxlstm.data.fasta import read_fasta
from bioxlstm.errors import ConfigError
from bioxlstm.model import XLSTMLanguageModel
from bioxlstm.train import TrainConfig, Trainer, find_checkpoint

SEPARATORS = {"DNA": "[SEP]", "protein": "<cls>"}


def fasta_tokens(path: str | Path, alphabet: Alphabet) -> torch.Tensor:
    """All records of a FASTA file as one id stream, each record preceded by a separator."""
    sep = alphabet.id(SEPARATORS[alphabet.name])
    ids: list[int] = []
    for name, seq in read_fasta(path):
        ids.append(sep)
        ids.extend(alphabet.encode(seq, record=name))
    return torch.tensor(ids, dtype=torch.long)


def split_tokens(tokens: torch.Tensor, valid_fraction: float, seq_len: int):
    """The head of the stream for training, its tail for validation (no overlap)."""
    if not 0.0 < valid_fraction < 1.0:
        raise ConfigError(f"'valid_fraction' must be in (0, 1), got {valid_fraction}")
    cut = int(len(tokens) * (1.0 - valid_fraction))
    train, valid = tokens[:cut], tokens[cut:]
    if len(train) < seq_len or len(valid) < seq_len:
        raise ConfigError(f"the data ({len(tokens)} tokens) is too short for seq_len={seq_len} "
                          f"with valid_fraction={valid_fraction}")
    return train, valid


def pretrain_fasta(
    fasta: str | Path,
    model_config: ModelConfig,
    train_config: TrainConfig,
    run_dir: str | Path,
    seq_len: int,
    valid_fraction: float = 0.1,
    resume: bool = False,
) -> Trainer:
    """Train a causal LM on a FASTA file; the model lands in run_dir/checkpoint."""
    if model_config.alphabet is None:
        raise ConfigError("config field 'alphabet' must name the alphabet to train on")
    alphabet = get_alphabet(model_config.alphabet)
    if model_config.vocab_size != len(alphabet):
        raise ConfigError(f"config field 'vocab_size' is {model_config.vocab_size} but the "
                          f"{alphabet.name} alphabet has {len(alphabet)} tokens")
    train, valid = split_tokens(fasta_tokens(fasta, alphabet), valid_fraction, seq_len)
    torch.manual_seed(train_config.seed)
    model = XLSTMLanguageModel(model_config)
    source = TokenWindows(train, seq_len, train_config.batch_size, seed=train_config.seed)
    valid_batches = functools.partial(eval_batches, valid, seq_len, train_config.batch_size,
                                      train_config.eval_batches)
    resume = resume and find_checkpoint(run_dir) is not None
    trainer = Trainer(model, train_config, source, run_dir, valid_batches, resume=resume)
    trainer.train()
    return trainer
