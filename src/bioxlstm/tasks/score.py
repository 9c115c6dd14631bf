"""Log-likelihood of sequences and of variants under a causal language model.

`score_fasta`: per record the summed log-likelihood of its bases (natural log; the first base is
scored after the record separator), the mean per base and the perplexity exp(-mean).
`score_variants`: per row llr = log p(alt window) - log p(ref window), averaged over the forward
strand and the reverse complement of both windows; rows that cannot be scored get a status instead.
Outputs are TSV; '-' writes to standard output.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bioxlstm.alphabets import Alphabet
from bioxlstm.checkpoint import require_lm_head
from bioxlstm.data.fasta import read_fasta
from bioxlstm.data.genome import Genome
from bioxlstm.errors import BioXLSTMError, ConfigError
from bioxlstm.io import atomic_write, check_output_file
from bioxlstm.model import XLSTMLanguageModel
from bioxlstm.strands import reverse_complement
from bioxlstm.tasks.inputs import can_run_in_pieces, length_batches, load_model, pad_batch
from bioxlstm.tasks.variants import VariantCheck, check_variant, read_variant_table

SCORE_COLUMNS = ("llr", "llr_forward", "llr_reverse", "status", "message")


class ScoreModelError(BioXLSTMError, ValueError):
    """The checkpoint cannot score: not a causal model, or not a DNA model for variants."""


@dataclass
class ScoreConfig:
    """Batching, chunking and variant-window settings."""

    batch_size: int = 16
    chunk_tokens: int = 4096
    window: int = 1024
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("batch_size", "chunk_tokens", "window"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"score field '{name}' must be a positive integer, got {value!r}")


@dataclass
class VariantSummary:
    """How many rows were read and scored, and how many were skipped for each reason."""

    rows: int
    scored: int
    skipped: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        """One line for the user, e.g. 'scored 8 of 10 variants; skipped: 2 ref_mismatch'."""
        text = f"scored {self.scored} of {self.rows} variants"
        if self.skipped:
            text += "; skipped: " + ", ".join(f"{n} {k}" for k, n in sorted(self.skipped.items()))
        return text


def score_fasta(fasta: str | Path, checkpoint: str | Path, out: str | Path = "-",
                config: ScoreConfig | None = None) -> int:
    """Write id, length, log_likelihood, mean_log_likelihood, perplexity per record; returns count."""
    config = config or ScoreConfig()
    _check_out(out)
    model, alphabet = _causal_model(checkpoint, config.device)
    names, tokens = [], []
    for name, seq in read_fasta(fasta):
        names.append(name)
        tokens.append(np.asarray(alphabet.encode(seq, record=name), dtype=np.uint8))
    bar = tqdm(total=sum(map(len, tokens)), unit="bp", unit_scale=True, dynamic_ncols=True,
               desc="score", disable=None if config.progress else True)
    with bar:
        totals = _log_likelihoods(model, alphabet, tokens, config, bar.update)
    rows = []
    for name, seq, total in zip(names, tokens, totals):
        mean = total / len(seq)
        rows.append([name, len(seq), f"{total:.4f}", f"{mean:.6f}", f"{math.exp(-mean):.4f}"])
    _write_tsv(out, ["id", "length", "log_likelihood", "mean_log_likelihood", "perplexity"], rows)
    return len(rows)


def score_variants(table: str | Path, genome: str | Path, checkpoint: str | Path,
                   out: str | Path = "-", config: ScoreConfig | None = None) -> VariantSummary:
    """Write the table back with llr columns and a status per row; see the module doc."""
    config = config or ScoreConfig()
    _check_out(out)
    model, alphabet = _causal_model(checkpoint, config.device)
    if alphabet.complement_ids() is None:
        raise ScoreModelError(f"{checkpoint}: variant scoring reads both strands and needs a DNA "
                              f"model; this one is a {alphabet.name} model")
    variants = read_variant_table(table)
    reference = Genome(genome)
    try:
        checks = [check_variant(reference, row, variants, config.window) for row in variants.rows]
    finally:
        reference.close()
    ok = [j for j, check in enumerate(checks) if check.status == "ok"]
    llrs: dict[int, tuple[float, float]] = {}
    bar = tqdm(total=len(ok), unit="variant", dynamic_ncols=True, desc="score",
               disable=None if config.progress else True)
    with bar:
        per_batch = max(1, config.batch_size // 4)  # four windows per variant: ref, alt, both strands
        for j in range(0, len(ok), per_batch):
            batch = ok[j:j + per_batch]
            llrs.update(zip(batch, _strand_llrs(model, alphabet, [checks[k] for k in batch], config)))
            bar.update(len(batch))
    rows = [row + ([""] * (len(variants.header) - len(row))) + _score_fields(check, llrs.get(j))
            for j, (row, check) in enumerate(zip(variants.rows, checks))]
    _write_tsv(out, variants.header + list(SCORE_COLUMNS), rows)
    skipped = Counter(check.status for check in checks if check.status != "ok")
    return VariantSummary(len(checks), len(ok), dict(skipped))


def run_score(checkpoint: str | Path, out: str | Path, config: ScoreConfig,
              fasta: str | Path | None = None, variants: str | Path | None = None,
              genome: str | Path | None = None) -> str:
    """`bioxlstm score`: score a FASTA file, or a variant table against its genome; a summary line."""
    if (fasta is None) == (variants is None):
        raise ConfigError("score needs one of --fasta or --variants")
    if fasta is not None:
        if genome is not None:
            raise ConfigError("--genome applies to --variants only")
        return f"scored {score_fasta(fasta, checkpoint, out, config)} sequences"
    if genome is None:
        raise ConfigError("--variants needs --genome (the reference FASTA the positions refer to)")
    return score_variants(variants, genome, checkpoint, out, config).line()


def _check_out(out: str | Path) -> None:
    """Fail before any scoring if the output file cannot be written ('-' is standard output)."""
    if str(out) != "-":
        check_output_file(out, "--out")


def _causal_model(checkpoint: str | Path, device: str) -> tuple[XLSTMLanguageModel, Alphabet]:
    if Path(checkpoint).is_dir():
        require_lm_head(checkpoint, "a log-likelihood")
    model, alphabet = load_model(checkpoint, device)
    if not can_run_in_pieces(model.config):
        raise ScoreModelError(f"{checkpoint}: scoring needs a causal model (a log-likelihood is "
                              f"left to right); this one sees the whole sequence at once")
    return model, alphabet


def _log_likelihoods(model: XLSTMLanguageModel, alphabet: Alphabet, tokens: list[np.ndarray],
                     config: ScoreConfig, progress: Callable[[int], object]) -> np.ndarray:
    """Summed log-likelihood of each record's bases (float64), batched by similar length."""
    device = next(model.parameters()).device
    totals = np.zeros(len(tokens), dtype=np.float64)
    for batch in length_batches([len(t) for t in tokens], config.batch_size, config.chunk_tokens):
        ids, lengths = pad_batch([tokens[k] for k in batch], alphabet, device)
        totals[batch] = model.log_likelihood(ids, lengths, config.chunk_tokens).cpu().numpy()
        progress(int((lengths - 1).sum()))
    return totals


def _strand_llrs(model: XLSTMLanguageModel, alphabet: Alphabet, checks: list[VariantCheck],
                 config: ScoreConfig) -> list[tuple[float, float]]:
    """(forward, reverse) llr per variant, its four windows scored in one batch."""
    device = next(model.parameters()).device
    windows = [alphabet.encode(c.ref_window) for c in checks] + [alphabet.encode(c.alt_window)
                                                                 for c in checks]
    ids, lengths = pad_batch(windows, alphabet, device)
    rc = torch.cat([ids[:, :1], reverse_complement(ids[:, 1:], lengths - 1)], dim=1)
    ll = model.log_likelihood(torch.cat([ids, rc]), lengths.repeat(2), config.chunk_tokens)
    ref, alt, rc_ref, rc_alt = ll.cpu().double().numpy().reshape(4, len(checks))
    return list(zip((alt - ref).tolist(), (rc_alt - rc_ref).tolist()))


def _score_fields(check: VariantCheck, llr: tuple[float, float] | None) -> list[str]:
    if llr is None:
        return ["", "", "", check.status, check.message]
    forward, reverse = llr
    return [f"{(forward + reverse) / 2:.6g}", f"{forward:.6g}", f"{reverse:.6g}", "ok", ""]


def _write_tsv(out: str | Path, header: list[str], rows: list[list]) -> None:
    """Tab-separated rows to a file (written atomically) or to standard output for '-'."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    if str(out) == "-":
        sys.stdout.write(buffer.getvalue())
    else:
        atomic_write(Path(out), lambda p: p.write_text(buffer.getvalue()))
