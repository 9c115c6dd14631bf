"""Variant fitness from a homology-aware protein model with the FIM query of docs/model.md, section 7.

For a site p the query is `<cls> WT with <mask-1> at p <eos> <mask-1>`; the model's next-token
distribution after it, renormalised over the 20 amino acids, gives log p(a at p). A substitution
scores log p(mut) - log p(wt); a multi-mutant adds its single effects. With homologs, the query
follows a context of homologs drawn with sequence weights plus the wild type, and site
log-probabilities are averaged over `replicates` context draws; with num_homologs = 0 the query
stands alone (zero context).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from bioxlstm.alphabets import PROTEIN
from bioxlstm.checkpoint import require_lm_head
from bioxlstm.data.dms import check_mutant, read_assay
from bioxlstm.data.fim import fim_sequence
from bioxlstm.data.homologs import sample_homologs, sequence_weights
from bioxlstm.data.msa import AMINO_ACIDS, Family
from bioxlstm.devices import resolve_device
from bioxlstm.errors import BioXLSTMError, ConfigError
from bioxlstm.extras import require
from bioxlstm.io import check_output_file
from bioxlstm.model import XLSTMLanguageModel
from bioxlstm.tasks.homolog_context import context_tokens, encode_context, expand_state
from bioxlstm.vocabulary import vocabulary_for

AA_IDS = torch.tensor([PROTEIN.id(a) for a in AMINO_ACIDS])
SCORED = ("ok", "synonymous")  # statuses of variants that get a score


class FitnessError(BioXLSTMError, ValueError):
    """No variant of an assay could be scored (e.g. the numbering does not fit the wild type)."""


@dataclass
class FitnessConfig:
    """Context size and averaging; identity is the neighbour threshold of the sequence weights."""

    num_homologs: int = 200
    replicates: int = 3
    identity: float = 0.8
    first_position: int = 1
    batch_size: int = 16
    chunk_tokens: int = 2048
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    include_synonymous: bool = False  # count synonymous rows (score 0) in the Spearman correlation

    def __post_init__(self) -> None:
        for name in ("replicates", "batch_size", "chunk_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"fitness '{name}' must be a positive integer, got {getattr(self, name)}")
        if self.num_homologs < 0:
            raise ConfigError(f"fitness 'num_homologs' must be >= 0, got {self.num_homologs}")


def fim_query(wild_type: list[int], site: int) -> tuple[list[int], list[int]]:
    """Tokens and position ids of `<cls> WT[:p] <mask-1> WT[p+1:] <eos> <mask-1>` (p 0-based)."""
    piece = fim_sequence(wild_type, [(site, site + 1)])
    return piece.tokens[:-1], piece.positions[:-1]


@torch.no_grad()
def site_log_probs(model: XLSTMLanguageModel, wild_type: str, sites: list[int],
                   context: list[str] | None = None, batch_size: int = 16,
                   chunk_tokens: int = 2048) -> Tensor:
    """log p(amino acid at site | rest, context) as (len(sites), 20), over AMINO_ACIDS' order."""
    device = next(model.parameters()).device
    wt = PROTEIN.encode(wild_type, record="wild type")
    state = None
    if context:
        state, _ = encode_context(model, *context_tokens(context), chunk_tokens=chunk_tokens)
    out = []
    for start in range(0, len(sites), batch_size):
        queries = [fim_query(wt, p) for p in sites[start:start + batch_size]]
        ids = torch.tensor([q[0] for q in queries], device=device)
        pos = torch.tensor([q[1] for q in queries], device=device)
        rows = None if state is None else expand_state(state, len(queries))
        logits = model(ids, state=rows, position_ids=pos).logits[:, -1].float()
        out.append(logits[:, AA_IDS.to(device)].log_softmax(-1).cpu())
    return torch.cat(out)


@dataclass
class FitnessResult:
    """Per-variant scores (NaN where not scored), statuses, and the Spearman correlation."""

    mutants: list[str]
    scores: list[float]
    statuses: list[str]
    messages: list[str]
    measured: list[float] | None
    spearman: float | None
    correlated: int = 0  # variants in the correlation
    synonymous_correlated: bool = False

    def summary(self) -> str:
        scored = sum(s in SCORED for s in self.statuses)
        line = f"scored {scored} of {len(self.mutants)} variants"
        if self.spearman is not None:
            line += f"; Spearman {self.spearman:.4f} over {self.correlated} of them"
            left = []
            if synonymous := self.statuses.count("synonymous") * (not self.synonymous_correlated):
                left.append(f"{synonymous} synonymous")
            if unmeasured := sum(s in SCORED and math.isnan(m)
                                 for s, m in zip(self.statuses, self.measured)):
                left.append(f"{unmeasured} without a measurement")
            if left:
                line += f" ({' and '.join(left)} scored but left out)"
        return line


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (scipy; ties get their average rank); NaN pairs are dropped."""
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    stats = require("scipy.stats", "protein", "the Spearman correlation of fitness scores")
    return float(stats.spearmanr(x, y).statistic)


def score_assay(model: XLSTMLanguageModel, wild_type: str, mutants: list[str],
                family: Family | None, config: FitnessConfig,
                measured: list[float] | None = None) -> FitnessResult:
    """Score every mutant; bad rows keep a status and message, and NaN as their score.

    Raises FitnessError when most variants disagree with the wild type: a numbering mistake, not
    a few bad rows.
    """
    variants = [check_mutant(m, wild_type, config.first_position) for m in mutants]
    ok = [v for v in variants if v.status in SCORED]
    misfits = [v for v in variants if v.status in ("wt_mismatch", "off_sequence")]
    if not ok or len(misfits) > len(variants) / 2:
        first = (misfits or variants)[0]
        raise FitnessError(f"{len(variants) - len(ok)} of {len(variants)} variants do not fit the "
                           f"wild type, e.g. {first.mutant}: {first.message} (check "
                           f"--first-position and the wild type)")
    sites = sorted({p for v in ok for p, wt, mt in v.substitutions if wt != mt})
    log_probs = torch.zeros(len(sites), len(AMINO_ACIDS), dtype=torch.float64)
    use_context = config.num_homologs > 0 and family is not None
    replicates = config.replicates if use_context else 1
    weights = None
    if use_context and family.aligned is not None:
        weights = sequence_weights(family.aligned, config.identity)
    generator = torch.Generator().manual_seed(config.seed)
    for _ in tqdm(range(replicates), desc="fitness replicates", disable=None if config.progress else True):
        context = None
        if use_context:
            homologs = sample_homologs(family, config.num_homologs, generator, exclude=wild_type,
                                       weights=weights)
            context = [*homologs, wild_type]
        log_probs += site_log_probs(model, wild_type, sites, context, config.batch_size,
                                    config.chunk_tokens).double()
    log_probs /= replicates
    row = {p: j for j, p in enumerate(sites)}
    col = {a: j for j, a in enumerate(AMINO_ACIDS)}
    scores = []
    for v in variants:
        if v.status not in SCORED:
            scores.append(math.nan)
            continue
        scores.append(sum(float(log_probs[row[p], col[mt]] - log_probs[row[p], col[wt]])
                          for p, wt, mt in v.substitutions if wt != mt))
    rho, count = None, 0
    if measured is not None:
        counted = ("ok", "synonymous") if config.include_synonymous else ("ok",)
        x = np.array([s if v.status in counted else math.nan for s, v in zip(scores, variants)])
        y = np.array(measured, dtype=float)
        count = int((~(np.isnan(x) | np.isnan(y))).sum())
        rho = spearman(x, y)
    return FitnessResult(mutants, scores, [v.status for v in variants],
                         [v.message for v in variants], measured, rho, count,
                         config.include_synonymous)


def write_scores(result: FitnessResult, path: str | Path) -> Path:
    """CSV with mutant, (measured score,) model score, status and message per variant."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        header = ["mutant", *(["measured"] if result.measured is not None else []), "score",
                  "status", "message"]
        writer.writerow(header)
        for j, mutant in enumerate(result.mutants):
            measured = [result.measured[j]] if result.measured is not None else []
            score = "" if math.isnan(result.scores[j]) else f"{result.scores[j]:.6f}"
            writer.writerow([mutant, *measured, score, result.statuses[j], result.messages[j]])
    return path


def run_fitness(checkpoint: str | Path, dms: str | Path, out: str | Path, config: FitnessConfig,
                msa: str | Path | None = None, wild_type: str | None = None,
                score_column: str = "DMS_score") -> FitnessResult:
    """Load a checkpoint, an assay and (optionally) a family; score and write the CSV to `out`.

    `wild_type` is a sequence or a FASTA file (its first record); it defaults to the family's
    first record (the a3m query).
    """
    from bioxlstm.data.fasta import read_fasta
    from bioxlstm.data.msa import read_family

    check_output_file(out, "--out")
    if Path(checkpoint).is_dir():
        require_lm_head(checkpoint, "a fitness score")
    family = read_family(msa) if msa is not None else None
    if wild_type is not None and Path(wild_type).is_file():
        wild_type = next(iter(read_fasta(wild_type)))[1]
    if wild_type is not None:
        wild_type = wild_type.strip().upper()
    if wild_type is None:
        if family is None:
            raise ConfigError("give the wild-type sequence (--wt) or a family whose first record "
                              "is the wild type (--msa)")
        wild_type = family.sequences[0]
    assay = read_assay(dms, score_column)
    torch.manual_seed(config.seed)
    model = XLSTMLanguageModel.from_pretrained(checkpoint).to(resolve_device(config.device)).eval()
    if not model.config.rope or vocabulary_for(model.config) is not PROTEIN:
        raise ConfigError("fitness needs a protein model with rope: true (FIM position ids)")
    result = score_assay(model, wild_type, assay.mutants, family, config, assay.scores)
    write_scores(result, out)
    return result

