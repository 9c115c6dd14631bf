"""Fill-in-the-middle (FIM) for proteins and the per-sequence position ids of docs/model.md, section 7.

One sequence with k spans cut out becomes

    <cls> a <mask-1> b <mask-2> c <eos> <mask-1> span1 <mask-2> span2

with position ids restarting at every sequence: <cls> 0, residue i (1-based) i, a mask token in the
body the start position of its span, <eos> 0, and in the appended part each <mask-j> the start of
its span and each moved residue its original position. Without spans (k = 0) a sequence is just
<cls> + residues, ended by the next sequence's <cls>.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bioxlstm.alphabets import PROTEIN
from bioxlstm.errors import BioXLSTMError

CLS = PROTEIN.id("<cls>")
PAD = PROTEIN.id("<pad>")
EOS = PROTEIN.id("<eos>")
MASKS = tuple(PROTEIN.id(f"<mask-{j}>") for j in range(1, 6))
MAX_SPANS = len(MASKS)


class FIMError(BioXLSTMError, ValueError):
    """A FIM layout is impossible (too many spans) or a token stream is not a FIM sample."""


@dataclass
class FIMConfig:
    """Spans per sequence: k ~ Poisson(rate), capped at max_spans (the paper: rate 1, at most 5)."""

    rate: float = 1.0
    max_spans: int = MAX_SPANS

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate:
            raise FIMError(f"FIM 'rate' must be >= 0, got {self.rate}")
        if not 0 <= self.max_spans <= MAX_SPANS:
            raise FIMError(f"FIM 'max_spans' must be in [0, {MAX_SPANS}], got {self.max_spans}")


@dataclass
class Piece:
    """One sequence as tokens and position ids; `fim` marks the moved span residues."""

    tokens: list[int]
    positions: list[int]
    fim: list[bool]


def plain_sequence(residues: list[int]) -> Piece:
    """<cls> + residues with positions 0, 1..L (no spans)."""
    n = len(residues)
    return Piece([CLS, *residues], list(range(n + 1)), [False] * (n + 1))


def fim_sequence(residues: list[int], spans: list[tuple[int, int]]) -> Piece:
    """The FIM layout of `residues` with the given spans: sorted, disjoint, non-empty [start, end)
    intervals of 0-based residue indices, at most five."""
    if len(spans) > MAX_SPANS:
        raise FIMError(f"at most {MAX_SPANS} spans per sequence, got {len(spans)}")
    last = 0
    for start, end in spans:
        if not last <= start < end <= len(residues):
            raise FIMError(f"spans {spans} must be sorted, disjoint, non-empty and inside a "
                           f"sequence of {len(residues)} residues")
        last = end
    if not spans:
        return plain_sequence(residues)
    tokens, positions = [CLS], [0]
    tail_tokens, tail_positions = [EOS], [0]
    cursor = 0
    for mask, (start, end) in zip(MASKS, spans):
        tokens += residues[cursor:start] + [mask]
        positions += list(range(cursor + 1, start + 1)) + [start + 1]
        tail_tokens += [mask, *residues[start:end]]
        tail_positions += [start + 1, *range(start + 1, end + 1)]
        cursor = end
    tokens += residues[cursor:]
    positions += list(range(cursor + 1, len(residues) + 1))
    fim = [False] * len(tokens) + [tok not in MASKS and tok != EOS for tok in tail_tokens]
    return Piece(tokens + tail_tokens, positions + tail_positions, fim)


def sample_spans(length: int, config: FIMConfig, generator: torch.Generator) -> list[tuple[int, int]]:
    """k ~ min(Poisson(rate), max_spans) spans from 2k distinct sorted cut points in 0..length."""
    if config.max_spans == 0 or config.rate == 0.0:
        return []
    k = int(torch.poisson(torch.tensor([config.rate]), generator=generator).item())
    k = min(k, config.max_spans, (length + 1) // 2)
    if k == 0:
        return []
    cuts = torch.randperm(length + 1, generator=generator)[: 2 * k].sort().values.tolist()
    return [(cuts[2 * j], cuts[2 * j + 1]) for j in range(k)]


def unfim(tokens: list[int]) -> list[list[int]]:
    """The original residues of every sequence in a stream of (FIM) pieces: the inverse of FIM."""
    sequences, j = [], 0
    while j < len(tokens):
        if tokens[j] != CLS:
            raise FIMError(f"token {j} is {PROTEIN.tokens[tokens[j]]}, expected <cls> to start a "
                           f"sequence")
        end = j + 1
        while end < len(tokens) and tokens[end] != CLS:
            end += 1
        sequences.append(_unfim_one(tokens[j + 1:end]))
        j = end
    return sequences


def _unfim_one(body_and_tail: list[int]) -> list[int]:
    if EOS not in body_and_tail:
        return list(body_and_tail)
    cut = body_and_tail.index(EOS)
    body, tail = body_and_tail[:cut], body_and_tail[cut + 1:]
    spans: dict[int, list[int]] = {}
    current = None
    for tok in tail:
        if tok in MASKS:
            current = spans.setdefault(tok, [])
        elif current is None:
            raise FIMError("a span after <eos> does not start with a <mask-j> token")
        else:
            current.append(tok)
    out = []
    for tok in body:
        if tok in MASKS:
            if tok not in spans:
                raise FIMError(f"{PROTEIN.tokens[tok]} in the body has no span after <eos>")
            out += spans[tok]
        else:
            out.append(tok)
    return out
