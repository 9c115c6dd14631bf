"""Family-conditioned protein generation (docs/model.md, section 7) and how generated members are judged.

Homologs are encoded as context chunkwise, carrying the recurrent state; new members are then
sampled one token at a time from that state after a <cls>, until the model emits the next <cls>.
Each sample gets its perplexity under the model (untempered, amino acids and <cls> only, over
its residues), its identity to
the nearest family member (global BLOSUM62 alignment, identical pairs / longer length) and its
HMMER bit score against a profile HMM built from the family's alignment (pyhmmer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bioxlstm.alphabets import PROTEIN
from bioxlstm.data.fim import CLS
from bioxlstm.data.homologs import sample_homologs
from bioxlstm.data.msa import AMINO_ACIDS, Family, read_family
from bioxlstm.devices import resolve_device
from bioxlstm.errors import ConfigError
from bioxlstm.extras import require
from bioxlstm.generation import sample_continuation
from bioxlstm.model import XLSTMLanguageModel
from bioxlstm.tasks.homolog_context import context_tokens, encode_context, expand_state
from bioxlstm.vocabulary import vocabulary_for


@dataclass
class FamilyGenerationConfig:
    """Context size, sampling and lengths; max_residues None means 1.5 x the longest member."""

    num_context: int = 100
    num_samples: int = 10
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    max_residues: int | None = None
    chunk_tokens: int = 2048
    seed: int = 0
    device: str = "auto"
    hmmer: bool = True

    def __post_init__(self) -> None:
        if self.num_context < 0:
            raise ConfigError(f"'num_context' must be >= 0, got {self.num_context}")
        for name in ("num_samples", "chunk_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"'{name}' must be a positive integer, got {getattr(self, name)}")
        if self.max_residues is not None and self.max_residues < 1:
            raise ConfigError(f"'max_residues' must be a positive integer, got {self.max_residues}")


@dataclass
class GeneratedProtein:
    """A sampled family member and its judgements (NaN where there is no HMMER hit)."""

    sequence: str
    perplexity: float
    identity: float
    nearest: str
    hmmer_bits: float
    complete: bool


@torch.no_grad()
def sample_members(model: XLSTMLanguageModel, context: list[str], num_samples: int,
                   max_residues: int, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None, generator: torch.Generator | None = None,
                   chunk_tokens: int = 2048) -> list[tuple[str, float, bool]]:
    """(sequence, mean residue log-likelihood, ended with <cls>) for each of num_samples members
    sampled after the context, drawing only amino acids and the closing <cls>."""
    tokens, positions = context_tokens(context)
    tokens = torch.cat([tokens, torch.tensor([CLS])])
    positions = torch.cat([positions, torch.tensor([0])])
    state, logits = encode_context(model, tokens, positions, chunk_tokens)
    state = expand_state(state, num_samples)
    allowed = torch.zeros(logits.shape[-1], dtype=torch.bool)
    allowed[[PROTEIN.id(a) for a in AMINO_ACIDS] + [CLS]] = True
    residues, logps = sample_continuation(model, state, logits.expand(num_samples, -1), max_residues,
                                          temperature, top_k, top_p, generator, stop_token=CLS,
                                          allowed=allowed, first_position=1)
    results = []
    for row, logp in zip(residues.tolist(), logps.double()):
        length = row.index(CLS) if CLS in row else len(row)
        seq = PROTEIN.decode(row[:length])
        mean = float(logp[:length].sum()) / max(len(seq), 1)
        results.append((seq, mean, CLS in row))
    return results


def nearest_member(sequence: str, members: list[str], names: list[str]) -> tuple[float, str]:
    """(identity, name) of the family member closest to `sequence` by global BLOSUM62 score."""
    Align = require("Bio.Align", "protein", "aligning generated proteins to their family")
    from Bio.Align import substitution_matrices

    if not sequence:
        return 0.0, ""
    aligner = Align.PairwiseAligner(mode="global", open_gap_score=-10.0, extend_gap_score=-0.5,
                                    substitution_matrix=substitution_matrices.load("BLOSUM62"))
    scores = [aligner.score(sequence, m) for m in members]
    best = max(range(len(members)), key=scores.__getitem__)
    identities = aligner.align(sequence, members[best])[0].counts().identities
    return identities / max(len(sequence), len(members[best])), names[best]


def hmmer_scores(family: Family, sequences: list[str]) -> list[float]:
    """Bit score of each sequence against a profile HMM built from the family's alignment
    (all filters off, so every sequence with any alignment gets a score; NaN for none)."""
    require("pyhmmer", "protein", "HMMER scores of generated proteins")
    from pyhmmer.easel import Alphabet, DigitalSequenceBlock, TextMSA, TextSequence
    from pyhmmer.plan7 import Background, Builder, Pipeline

    if family.aligned is None:
        raise ConfigError(f"family {family.name!r} is not aligned: no profile HMM can be built")
    alphabet = Alphabet.amino()
    msa = TextMSA(name=family.name.encode(), sequences=[
        TextSequence(name=f"m{j}".encode(), sequence=row) for j, row in enumerate(family.aligned)])
    background = Background(alphabet)
    hmm, _, _ = Builder(alphabet).build_msa(msa.digitize(alphabet), background)
    named = [(f"s{j}", s) for j, s in enumerate(sequences) if s]
    if not named:
        return [math.nan] * len(sequences)
    block = DigitalSequenceBlock(alphabet, [TextSequence(name=n.encode(), sequence=s).digitize(alphabet)
                                            for n, s in named])
    pipeline = Pipeline(alphabet, background=background, bias_filter=False, F1=1.0, F2=1.0, F3=1.0,
                        E=1e12, domE=1e12)
    found = {}
    for hit in pipeline.search_hmm(hmm, block):
        name = hit.name.decode() if isinstance(hit.name, bytes) else hit.name
        found[name] = float(hit.score)
    return [found.get(f"s{j}", math.nan) for j in range(len(sequences))]


def generate_family_members(model: XLSTMLanguageModel, family: Family,
                            config: FamilyGenerationConfig) -> list[GeneratedProtein]:
    """Sample config.num_samples new members after num_context homologs (drawn with sequence
    weights) and judge each one."""
    generator = torch.Generator().manual_seed(config.seed)
    context = sample_homologs(family, config.num_context, generator)
    longest = max(map(len, family.sequences))
    max_residues = config.max_residues or math.ceil(1.5 * longest)
    samples = sample_members(model, context, config.num_samples, max_residues, config.temperature,
                             config.top_k, config.top_p, generator, config.chunk_tokens)
    sequences = [s for s, _, _ in samples]
    bits = (hmmer_scores(family, sequences) if config.hmmer and family.aligned is not None
            else [math.nan] * len(samples))
    out = []
    for (seq, mean, complete), score in tqdm(list(zip(samples, bits)), desc="judging samples",
                                             disable=None):
        identity, nearest = nearest_member(seq, family.sequences, family.names)
        out.append(GeneratedProtein(seq, math.exp(-mean) if seq else math.nan, identity, nearest,
                                    score, complete))
    return out


def fasta_text(proteins: list[GeneratedProtein]) -> str:
    """FASTA text of the samples with their judgements in the headers."""
    lines = []
    for j, p in enumerate(proteins, 1):
        bits = "nan" if math.isnan(p.hmmer_bits) else f"{p.hmmer_bits:.1f}"
        lines.append(f">sample_{j} perplexity={p.perplexity:.3f} identity={p.identity:.3f} "
                     f"nearest={p.nearest} hmmer_bits={bits} complete={str(p.complete).lower()}")
        lines.append(p.sequence)
    return "\n".join(lines) + "\n"


def run_family_generation(checkpoint: str | Path, msa: str | Path,
                          config: FamilyGenerationConfig) -> list[GeneratedProtein]:
    """Load a protein checkpoint and a family file, generate and judge the samples."""
    family = read_family(msa)
    torch.manual_seed(config.seed)
    model = XLSTMLanguageModel.from_pretrained(checkpoint).to(resolve_device(config.device)).eval()
    if vocabulary_for(model.config) is not PROTEIN:
        raise ConfigError(f"--msa needs a protein model, but the checkpoint's alphabet is "
                          f"{model.config.alphabet!r}")
    return generate_family_members(model, family, config)
