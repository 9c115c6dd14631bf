"""Alphabets: token ids, special tokens and (for DNA) the complement map (docs/model.md, sections 6 and 7)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from bioxlstm.errors import BioXLSTMError

IGNORE_INDEX = -100  # the label of a position that is not scored (PyTorch's cross-entropy default)


class AlphabetError(BioXLSTMError, ValueError):
    """A sequence holds a character its alphabet cannot encode."""


@dataclass(frozen=True)
class Alphabet:
    """A fixed vocabulary: `tokens[i]` has id i; `aliases` map extra characters onto tokens.

    `roles` name the tokens with a job: pad; bos, which starts every record (so a stream of records
    is joined by it); eos, which ends a record where the format has such a token; mask; unk.
    `targets` are the tokens a loss is scored on (None: every token but padding). `complement`
    maps tokens onto their complements, for alphabets that have one (DNA).
    """

    name: str
    tokens: tuple[str, ...]
    specials: frozenset[str]
    roles: dict[str, str]
    aliases: dict[str, str] = field(default_factory=dict)
    complement: dict[str, str] = field(default_factory=dict)
    targets: frozenset[str] | None = None
    uppercase: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ids", {t: j for j, t in enumerate(self.tokens)})

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._ids

    def id(self, token: str) -> int:
        """The id of a token (special tokens by their full name, e.g. '[BOS]')."""
        return self._ids[token]

    def _role(self, role: str) -> int | None:
        token = self.roles.get(role)
        return None if token is None else self._ids[token]

    @property
    def pad_id(self) -> int:
        return self._ids[self.roles["pad"]]

    @property
    def bos_id(self) -> int:
        """The token that starts every record (and so separates records in a stream)."""
        return self._ids[self.roles["bos"]]

    @property
    def eos_id(self) -> int | None:
        return self._role("eos")

    @property
    def mask_id(self) -> int | None:
        return self._role("mask")

    @property
    def unk_id(self) -> int | None:
        return self._role("unk")

    @property
    def stop_id(self) -> int:
        """What ends a generated record: eos where the format has one, else the next record's bos."""
        return self.bos_id if self.eos_id is None else self.eos_id

    def target_ids(self) -> list[int]:
        """Ids a loss may be scored on."""
        if self.targets is None:
            return [j for j in range(len(self.tokens)) if j != self.pad_id]
        return sorted(self._ids[t] for t in self.targets)

    def complement_ids(self) -> list[int] | None:
        """For each id, the id of its complement (itself when it has none); None without a map."""
        if not self.complement:
            return None
        return [self._ids[self.complement.get(t, t)] for t in self.tokens]

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

    def to_json(self) -> str:
        """The content of a checkpoint's tokenizer.json: the alphabet's name and its tokens."""
        return json.dumps({"type": "alphabet", "name": self.name.lower(), "tokens": list(self.tokens)},
                          indent=1)


_DNA_SPECIALS = ("[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[RESERVED]", "[UNK]")
_IUPAC = {c: "N" for c in "RYSWKMBDHV"}

DNA = Alphabet(
    name="DNA",
    tokens=(*_DNA_SPECIALS, "A", "C", "G", "T", "N"),
    specials=frozenset(_DNA_SPECIALS),
    roles={"pad": "[PAD]", "bos": "[SEP]", "mask": "[MASK]", "unk": "[UNK]"},
    aliases=_IUPAC,
    complement={"A": "T", "T": "A", "C": "G", "G": "C"},
    targets=frozenset("ACGT") | {"[SEP]"},  # N and the other special tokens are never targets
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
    roles={"pad": "<pad>", "bos": "<cls>", "mask": "<mask>", "unk": "<unk>"},
)

ALPHABETS = {"dna": DNA, "protein": PROTEIN}


def get_alphabet(name: str) -> Alphabet:
    """The alphabet called `name` ('dna' or 'protein')."""
    if name.lower() not in ALPHABETS:
        raise AlphabetError(f"unknown alphabet {name!r}; choose one of {sorted(ALPHABETS)}")
    return ALPHABETS[name.lower()]
