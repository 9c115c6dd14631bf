"""Pretraining: causal LM on the records of a FASTA file, and CLM/MLM on windows of a genome."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from bioxlstm.alphabets import DNA, Alphabet, get_alphabet
from bioxlstm.config import ModelConfig, TrainConfig
from bioxlstm.data.batches import TokenWindows, eval_batches, record_positions, target_labels
from bioxlstm.data.fasta import read_fasta
from bioxlstm.data.genome import Genome
from bioxlstm.data.genome_windows import GenomeWindows, WindowConfig, genome_eval_batches
from bioxlstm.data.intervals import Interval, chromosome_intervals, read_intervals
from bioxlstm.errors import ConfigError
from bioxlstm.model import XLSTMLanguageModel
from bioxlstm.train import Trainer


def fasta_tokens(path: str | Path, alphabet: Alphabet) -> torch.Tensor:
    """All records of a FASTA file as one id stream, each record preceded by the alphabet's bos."""
    sep = alphabet.bos_id
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
    rc_aug: float = 0.0,
) -> Trainer:
    """Train a causal LM on a FASTA file; the model lands in run_dir/checkpoint.

    rc_aug: chance that a training window is read as its reverse complement (DNA), as genome
    pretraining does, so a model sees both strands.

    Models with rotary embeddings get position ids that restart at every record (docs/model.md, section 7);
    DNA labels leave out N, as in genome pretraining.
    """
    alphabet = _check_alphabet(model_config)
    tokens = fasta_tokens(fasta, alphabet)
    train, valid = split_tokens(tokens, valid_fraction, seq_len)
    train_pos = valid_pos = None
    if model_config.rope:
        positions = record_positions(tokens, alphabet.bos_id)
        train_pos, valid_pos = positions[:len(train)], positions[len(train):]
    torch.manual_seed(train_config.seed)
    model = XLSTMLanguageModel(model_config)
    labels = target_labels(alphabet)  # e.g. DNA's N is read but never a target
    complement = alphabet.complement_ids()
    if rc_aug and complement is None:
        raise ConfigError(f"--rc-aug needs an alphabet with a complement (DNA), not {alphabet.name}")
    source = TokenWindows(train, seq_len, train_config.batch_size, seed=train_config.seed,
                          positions=train_pos, labels=labels, rc_prob=rc_aug,
                          complement=None if complement is None else torch.tensor(complement))
    valid_batches = functools.partial(eval_batches, valid, seq_len, train_config.batch_size,
                                      train_config.eval_batches, valid_pos, labels)
    trainer = Trainer(model, train_config, source, run_dir, valid_batches, resume=resume)
    trainer.train()
    return trainer


@dataclass(frozen=True)
class GenomeData:
    """Where genome pretraining windows come from: a FASTA genome and how it is split.

    intervals: a BED file (chrom start end split); without one, whole chromosomes are used and
    valid_chroms / test_chroms name the held-out ones.
    """

    genome: str | Path
    intervals: str | Path | None = None
    valid_chroms: tuple[str, ...] = ()
    test_chroms: tuple[str, ...] = ()

    def load(self) -> tuple[Genome, list[Interval]]:
        """Open the genome and read (or make) its intervals, checked against the genome."""
        genome = Genome(self.genome)
        if self.intervals is not None:
            return genome, read_intervals(self.intervals, genome.lengths)
        if not self.valid_chroms:
            raise ConfigError("without an interval file, name the validation chromosomes "
                              "(valid_chroms / --valid-chroms)")
        return genome, chromosome_intervals(genome.lengths, self.valid_chroms, self.test_chroms)


def pretrain_genome(
    data: GenomeData,
    model_config: ModelConfig,
    train_config: TrainConfig,
    run_dir: str | Path,
    windows: WindowConfig,
    resume: bool = False,
) -> Trainer:
    """Pretrain a DNA model (CLM or MLM) on random windows of a genome's train split.

    Validation uses fixed consecutive windows of the valid split; the model lands in
    run_dir/checkpoint and the run resumes exactly with resume=True.
    """
    _check_alphabet(model_config, DNA)
    if windows.objective == "clm" and (model_config.bidirectional or model_config.rc_equivariant):
        kind = "bidirectional" if model_config.bidirectional else "RC-equivariant"
        raise ConfigError(f"a {kind} model sees the tokens it would predict under the causal "
                          f"objective; pretrain it with objective 'mlm'")
    if windows.batch_size != train_config.batch_size:
        raise ConfigError(f"window batch_size {windows.batch_size} differs from the training "
                          f"batch_size {train_config.batch_size}")
    genome, intervals = data.load()
    source = GenomeWindows(genome, intervals, windows, split="train", seed=train_config.seed)
    valid_batches = functools.partial(genome_eval_batches, genome, intervals, windows, "valid",
                                      train_config.eval_batches, train_config.seed)
    valid_batches()
    torch.manual_seed(train_config.seed)
    model = XLSTMLanguageModel(model_config)
    trainer = Trainer(model, train_config, source, run_dir, valid_batches, resume=resume)
    trainer.train()
    return trainer


def _check_alphabet(model_config: ModelConfig, required: Alphabet | None = None) -> Alphabet:
    """The config's fixed alphabet, which must match vocab_size and (if given) be the one the data
    is written in."""
    if model_config.alphabet is None:
        raise ConfigError("config field 'alphabet' must name the alphabet to train on")
    alphabet = get_alphabet(model_config.alphabet)
    if required is not None and alphabet is not required:
        raise ConfigError(f"config field 'alphabet' is {model_config.alphabet!r}; this data needs "
                          f"{required.name.lower()!r}")
    if model_config.vocab_size != len(alphabet):
        raise ConfigError(f"config field 'vocab_size' is {model_config.vocab_size} but the "
                          f"{alphabet.name} alphabet has {len(alphabet)} tokens")
    return alphabet
