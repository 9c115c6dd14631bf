"""One vocabulary interface for every model, and where a checkpoint keeps its vocabulary.

A vocabulary is a fixed `Alphabet` (DNA, protein) or a learned `SmilesTokenizer`; both give the
role ids (pad, bos, eos, mask, unk, stop), the ids a loss is scored on and, where the alphabet has
one, a complement map. Every checkpoint writes its vocabulary to tokenizer.json, so a model
directory says by itself which ids mean what.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bioxlstm.alphabets import ALPHABETS, Alphabet, get_alphabet
from bioxlstm.errors import CheckpointError, ConfigError
from bioxlstm.smiles import SPLITTERS, TOKENIZER_FILE, SmilesTokenizer

Vocabulary = Alphabet | SmilesTokenizer


def vocabulary_for(config: Any, directory: str | Path | None = None) -> Vocabulary:
    """The vocabulary of a model: its checkpoint's tokenizer.json when `directory` has one, else
    the fixed alphabet its config names."""
    if directory is not None and (Path(directory) / TOKENIZER_FILE).is_file():
        vocabulary = read_vocabulary(directory)
    elif config.alphabet is None:
        raise ConfigError("the model config names no alphabet; set its 'alphabet' field")
    elif config.alphabet.lower() not in ALPHABETS:
        where = f"{directory}: " if directory is not None else ""
        raise CheckpointError(f"{where}a {config.alphabet} model keeps its learned vocabulary in "
                              f"{TOKENIZER_FILE}, which is missing")
    else:
        vocabulary = get_alphabet(config.alphabet)
    if len(vocabulary) != config.vocab_size:
        raise CheckpointError(f"the vocabulary has {len(vocabulary)} tokens but the model's "
                              f"vocab_size is {config.vocab_size}")
    return vocabulary


def read_vocabulary(directory: str | Path) -> Vocabulary:
    """The vocabulary written to directory/tokenizer.json (a fixed alphabet or SMILES tokens)."""
    path = Path(directory) / TOKENIZER_FILE
    try:
        data = json.loads(path.read_text())
        kind = data["type"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: not a readable vocabulary ({err})") from None
    if kind in SPLITTERS:  # a SMILES vocabulary, whichever way its strings are split
        return SmilesTokenizer.load(directory)
    if kind != "alphabet":
        raise CheckpointError(f"{path}: unknown vocabulary type {kind!r}")
    alphabet = get_alphabet(str(data.get("name")))
    if list(alphabet.tokens) != data.get("tokens"):
        raise CheckpointError(f"{path}: its tokens differ from bioxlstm's {alphabet.name} alphabet")
    return alphabet


def vocabulary_file(config: Any) -> dict[str, str]:
    """{tokenizer.json: text} for a model whose config names a fixed alphabet, else {} (a learned
    vocabulary is written by whoever learned it)."""
    name = (getattr(config, "alphabet", None) or "").lower()
    return {TOKENIZER_FILE: ALPHABETS[name].to_json()} if name in ALPHABETS else {}
