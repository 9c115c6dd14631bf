"""Alphabets: token ids, special tokens and (for DNA) the complement map (docs/model.md, sections 6 and 7)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from bioxlstm.errors import BioXLSTMError


class AlphabetError(BioXLSTMError, ValueError):
    """A sequence holds a character its alphabet cannot encode."""


@dataclass(frozen=True)
class Alphabet:
    """A fixed vocabulary: `tokens[i]` has id i; `aliases` map extra characters onto tokens."""

    name: str
    tokens: tuple[str, ...]
    specials: frozenset[str]
    aliases: dict[str, str] = field(default_factory=dict)
    complement: dict[str, str] = field(default_factory=dict)
    uppercase: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ids", {t: j for j, t in enumerate(self.tokens)})

    def __len__(self) -> int:
        return len(self.tokens)

    def id(self, token: str) -> int:
        """The id of a token (special tokens by their full name, e.g. '[BOS]')."""
        return self._ids[token]

    def encode(self, text: str, record: str | None = None) -> list[int]:
        """Ids of each character; an unknown character raises AlphabetError naming its position."""
        ids = self._ids
        out = []
        for pos, ch in enumerate(text):
            up = ch.upper() if self.uppercase else ch
            tok = self.aliases.get(up, up)
            if tok not in ids or tok in self.specials:
                where = f"record {record!r}, " if record else ""
                raise AlphabetError(f"{where}position {pos + 1}: character {text[pos]!r} is not in the "
                                    f"{self.name} alphabet")
            out.append(ids[tok])
        return out

    def decode(self, ids: Sequence[int] | torch.Tensor, keep_specials: bool = False) -> str:
        """The text of a sequence of ids; special tokens are dropped unless asked for."""
        tokens = (self.tokens[int(j)] for j in ids)
        return "".join(t for t in tokens if keep_specials or t not in self.specials)

    def complement_ids(self) -> list[int]:
        """For each id, the id of its complement (itself when it has none)."""
        return [self._ids[self.complement.get(t, t)] for t in self.tokens]


_DNA_SPECIALS = ("[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[RESERVED]", "[UNK]")
_IUPAC = {c: "N" for c in "RYSWKMBDHV"}

DNA = Alphabet(
    name="DNA",
    tokens=(*_DNA_SPECIALS, "A", "C", "G", "T", "N"),
    specials=frozenset(_DNA_SPECIALS),
    aliases=_IUPAC,
    complement={"A": "T", "T": "A", "C": "G", "G": "C"},
)

_DNA_BYTES = np.full(256, -1, dtype=np.int64)  # byte -> DNA id; -1 for bytes DNA cannot encode
for _ch in "ACGTN" + "".join(_IUPAC):
    _DNA_BYTES[[ord(_ch), ord(_ch.lower())]] = DNA.id(DNA.aliases.get(_ch, _ch))


def encode_dna(text: str, record: str | None = None) -> torch.Tensor:
    """DNA ids of text as a 1-D long tensor: `DNA.encode` vectorised for genome-sized windows."""
    raw = text.encode("ascii", errors="replace")
    ids = _DNA_BYTES[np.frombuffer(raw, dtype=np.uint8)]
    bad = np.flatnonzero(ids < 0)
    if bad.size:
        where = f"record {record!r}, " if record else ""
        raise AlphabetError(f"{where}position {bad[0] + 1}: character {text[bad[0]]!r} is not in "
                            f"the DNA alphabet")
    return torch.from_numpy(ids)


_PROTEIN_SPECIALS = ("<cls>", "<pad>", "<eos>", "<unk>")
_MASKS = ("<null_1>", "<mask>", "<mask-1>", "<mask-2>", "<mask-3>", "<mask-4>", "<mask-5>")

PROTEIN = Alphabet(
    name="protein",
    tokens=(*_PROTEIN_SPECIALS, *"LAGVSERTIDPKQNFYMHWC", *"XBUZO", ".", "-", *_MASKS),
    specials=frozenset(_PROTEIN_SPECIALS + _MASKS),
)

ALPHABETS = {"dna": DNA, "protein": PROTEIN}


def get_alphabet(name: str) -> Alphabet:
    """The alphabet called `name` ('dna' or 'protein')."""
    if name.lower() not in ALPHABETS:
        raise AlphabetError(f"unknown alphabet {name!r}; choose one of {sorted(ALPHABETS)}")
    return ALPHABETS[name.lower()]
