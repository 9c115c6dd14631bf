"""SMILES tokenizer (docs/model.md §8): a regex split into chemical tokens and a vocabulary learned from data.

Outside brackets a token is a ring bond `%nn`, `Cl`, `Br`, or one character (atoms of the organic
subset, aromatic atoms, bonds, branches, ring digits, '.'). A bracket atom is split as in the
official Chem-xLSTM code: `[`, isotope digits, the element symbol (two letters kept together),
chirality `@`/`@@`, hydrogens, charge and class, `]`. Every character lands in exactly one token,
so joining the tokens gives back the SMILES string unchanged.

Checkpoints converted from Chem-xLSTM use that code's own split instead (tokenizer.json type
"chem-xlstm-regex", `split_smiles_chem_xlstm`), which refuses what the original would drop.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from bioxlstm.errors import BioXLSTMError
from bioxlstm.io import atomic_write

PAD, BEG, END, UNK = "[PAD]", "[BEG]", "[END]", "[UNK]"
SPECIALS = (PAD, BEG, END, UNK)
SEPARATOR = "."
TOKENIZER_FILE = "tokenizer.json"

_OUTSIDE = re.compile(r"\[[^\]]*\]|%\d\d|Cl|Br|.", re.DOTALL)
_INSIDE = re.compile(r"[A-Z][a-z]?|se|as|te|@@|.", re.DOTALL)

SMILES_REGEX, CHEM_XLSTM_REGEX = "smiles-regex", "chem-xlstm-regex"
# Chem-xLSTM's segmentation (smiles_utils.py at ml-jku/Chem-xLSTM@9cf7b7f): at each position the
# first of: Cs inside [Cs], a two-letter symbol of its list, a one-letter atom, a bond, branch,
# bracket or ring token; characters none of these match are dropped by the original.
_CHEM_XLSTM_TWO = ("Ac Ag Al Am As Au Ba Be Bi Br Ca Cf Cl Cm Cu Dy Er Eu Fe Fm Gd He Kr La Li Lr Lu "
                   "Mg Mn Na Nd Ne Ni Pa Pb Pm Pr Pt Pu Ra Rb Rf Sb Se Si Sm Sr Tb Te Th Ti Tm Xe Zn "
                   "se te").split()
_CHEM_XLSTM = re.compile(r"(?<=\[)Cs(?=\])|" + "|".join(_CHEM_XLSTM_TWO)
                         + r"|[UVKCBHNOSPFIbcnosp]|[\[\]().=#\-+/:~@?>*$]|\\\\|%\d\d|\d")


class SmilesVocabularyError(BioXLSTMError, ValueError):
    """A SMILES string holds a token the model's vocabulary lacks, or a tokenizer file is bad."""


def split_smiles(smiles: str) -> list[str]:
    """The tokens of one SMILES string; "".join(split_smiles(s)) == s for every string."""
    tokens: list[str] = []
    for piece in _OUTSIDE.findall(smiles):
        if len(piece) > 1 and piece[0] == "[" and piece[-1] == "]":
            tokens.append("[")
            tokens.extend(_INSIDE.findall(piece[1:-1]))
            tokens.append("]")
        else:
            tokens.append(piece)
    return tokens


def chem_xlstm_pieces(smiles: str) -> list[str]:
    """Chem-xLSTM's tokens of `smiles`, with each character it would drop as a piece of its own."""
    pieces, end = [], 0
    for match in _CHEM_XLSTM.finditer(smiles):
        pieces.extend(smiles[end:match.start()])
        pieces.append(match.group())
        end = match.end()
    return pieces + list(smiles[end:])


def split_smiles_chem_xlstm(smiles: str) -> list[str]:
    """Chem-xLSTM's tokens of `smiles`; a character it would silently drop raises instead."""
    tokens = _CHEM_XLSTM.findall(smiles)
    if "".join(tokens) != smiles:
        pieces = chem_xlstm_pieces(smiles)
        dropped = sorted(set(pieces) - set(tokens))
        raise SmilesVocabularyError(f"SMILES {smiles!r}: the Chem-xLSTM tokenizer drops {dropped} "
                                    f"(a lone backslash, or an element outside its list), so this "
                                    f"model never saw such a molecule as written")
    return tokens


SPLITTERS = {SMILES_REGEX: split_smiles, CHEM_XLSTM_REGEX: split_smiles_chem_xlstm}


@dataclass(frozen=True)
class SmilesTokenizer:
    """Token <-> id map: the specials [PAD]0 [BEG]1 [END]2 [UNK]3, then the learned tokens.

    It has the role ids, targets and (absent) complement map of bioxlstm.alphabets.Alphabet, so
    code that feeds a model works on either. `scheme` names how a SMILES string is split into
    tokens (a key of SPLITTERS).
    """

    tokens: tuple[str, ...]
    scheme: str = SMILES_REGEX
    in_context: bool = False  # trained on '.'-joined domain rows: a molecule ends at '.'
    name = "smiles"

    def __post_init__(self) -> None:
        if self.scheme not in SPLITTERS:
            raise SmilesVocabularyError(f"unknown SMILES tokenizer type {self.scheme!r}; known: "
                                        f"{sorted(SPLITTERS)}")
        if self.tokens[: len(SPECIALS)] != SPECIALS or len(set(self.tokens)) != len(self.tokens):
            raise SmilesVocabularyError(f"a SMILES vocabulary must start with {SPECIALS} and hold "
                                        f"no duplicates")
        if self.in_context and SEPARATOR not in self.tokens:
            raise SmilesVocabularyError(f"an in-context SMILES vocabulary needs '{SEPARATOR}', which "
                                        f"joins the molecules of a row; this one has none")
        object.__setattr__(self, "_ids", {t: j for j, t in enumerate(self.tokens)})

    @classmethod
    def build(cls, smiles: Iterable[str], in_context: bool = False) -> SmilesTokenizer:
        """Learn the vocabulary of a corpus: its tokens by falling frequency (ties by name), and '.'.

        in_context records that the model reads '.'-joined rows of a domain's molecules.
        """
        counts = Counter(SEPARATOR)
        for s in smiles:
            counts.update(split_smiles(s))
        learned = sorted(counts, key=lambda t: (-counts[t], t))
        return cls(SPECIALS + tuple(learned), in_context=in_context)

    def __len__(self) -> int:
        return len(self.tokens)

    def id(self, token: str) -> int:
        """The id of a token (specials by their full name, e.g. '[END]')."""
        return self._ids[token]

    def __contains__(self, token: object) -> bool:
        return token in self._ids

    @property
    def pad_id(self) -> int:
        return self._ids[PAD]

    @property
    def bos_id(self) -> int:
        """[BEG], which starts every molecule row."""
        return self._ids[BEG]

    @property
    def eos_id(self) -> int:
        """[END], which ends an unconditional molecule row."""
        return self._ids[END]

    @property
    def mask_id(self) -> None:
        """SMILES models are causal only: there is no mask token."""
        return None

    @property
    def unk_id(self) -> int:
        return self._ids[UNK]

    @property
    def stop_id(self) -> int:
        """What ends a generated molecule: [END], or '.' for a model of '.'-joined domain rows."""
        return self.separator_id if self.in_context else self.eos_id

    @property
    def separator_id(self) -> int:
        """'.', which joins the molecules of an in-context row."""
        return self._ids[SEPARATOR]

    def target_ids(self) -> list[int]:
        """Every id but padding may be a target."""
        return [j for j in range(len(self.tokens)) if j != self.pad_id]

    def complement_ids(self) -> None:
        """SMILES have no complement."""
        return None

    def unknown_tokens(self, smiles: str) -> list[str]:
        """The tokens of `smiles` that are not in the vocabulary (empty when it encodes cleanly)."""
        pieces = chem_xlstm_pieces(smiles) if self.scheme == CHEM_XLSTM_REGEX else split_smiles(smiles)
        return [t for t in pieces if t not in self._ids or t in SPECIALS]

    def encode(self, smiles: str, strict: bool = True) -> list[int]:
        """Ids of the tokens of `smiles` (no specials added).

        strict: a token outside the vocabulary raises SmilesVocabularyError; otherwise it becomes [UNK].
        """
        out = []
        for token in SPLITTERS[self.scheme](smiles):
            j = self._ids.get(token)
            if j is None or token in SPECIALS:
                if strict:
                    raise SmilesVocabularyError(f"SMILES {smiles!r}: token {token!r} is not in the "
                                                f"model's vocabulary")
                j = self.unk_id
            out.append(j)
        return out

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """The SMILES text of ids, stopping at [END] and dropping the other special tokens."""
        out = []
        for j in ids:
            token = self.tokens[int(j)]
            if token == END:
                break
            if token not in SPECIALS:
                out.append(token)
        return "".join(out)

    def to_json(self) -> str:
        """The content of tokenizer.json."""
        return json.dumps({"type": self.scheme, "in_context": self.in_context,
                           "tokens": list(self.tokens)}, indent=1)

    def save(self, directory: str | Path) -> Path:
        """Write tokenizer.json into `directory` (atomically); returns its path."""
        path = Path(directory) / TOKENIZER_FILE
        text = self.to_json()
        atomic_write(path, lambda p: p.write_text(text))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> SmilesTokenizer:
        """Read tokenizer.json from a checkpoint (or run) directory."""
        path = Path(directory) / TOKENIZER_FILE
        if not path.is_file():
            raise SmilesVocabularyError(f"{path}: no such file (a SMILES checkpoint keeps its "
                                        f"vocabulary there)")
        try:
            data = json.loads(path.read_text())
            tokens, scheme = tuple(data["tokens"]), data.get("type", SMILES_REGEX)
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
            raise SmilesVocabularyError(f"{path}: not a readable SMILES tokenizer ({err})") from None
        if not all(isinstance(t, str) for t in tokens):
            raise SmilesVocabularyError(f"{path}: tokens must be strings")
        if scheme not in SPLITTERS:
            raise SmilesVocabularyError(f"{path}: unknown tokenizer type {scheme!r}")
        return cls(tokens, scheme, bool(data.get("in_context", False)))
