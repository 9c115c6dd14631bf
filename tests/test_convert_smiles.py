"""The Chem-xLSTM tokenisation scheme of converted SMILES checkpoints (tokenizer.json type
"chem-xlstm-regex"): the official split, and a refusal where the official code drops characters."""

import json

import pytest

from bioxlstm.smiles import (
    CHEM_XLSTM_REGEX,
    SPECIALS,
    SmilesTokenizer,
    SmilesVocabularyError,
    chem_xlstm_pieces,
    split_smiles_chem_xlstm,
)


@pytest.mark.parametrize("smiles, tokens", [  # splits of the official segment_smiles (NOTES 4.5)
    ("[C@@H](N)O", ["[", "C", "@", "@", "H", "]", "(", "N", ")", "O"]),
    ("[NH3+]", ["[", "N", "H", "3", "+", "]"]),
    ("[Na+].[Cl-]", ["[", "Na", "+", "]", ".", "[", "Cl", "-", "]"]),
    ("[13CH4]", ["[", "1", "3", "C", "H", "4", "]"]),
    ("[Sn]", ["[", "S", "n", "]"]),
    ("[Co]", ["[", "C", "o", "]"]),
    ("[Cs+]", ["[", "C", "s", "+", "]"]),
    ("[Cs]", ["[", "Cs", "]"]),
    ("c1cc[se]c1", ["c", "1", "c", "c", "[", "se", "]", "c", "1"]),
    ("C%12CC%12", ["C", "%12", "C", "C", "%12"]),
    ("CSb", ["C", "Sb"]),
])
def test_official_split(smiles, tokens):
    assert split_smiles_chem_xlstm(smiles) == tokens


@pytest.mark.parametrize("smiles, dropped", [
    ("F/C=C\\F", ["\\"]), ("C[Hg]C", ["g"]), ("[Zr+4]", ["Z", "r"]), ("C%1CC", ["%"]),
])
def test_what_the_official_code_drops_is_refused(smiles, dropped):
    with pytest.raises(SmilesVocabularyError, match="drops") as err:
        split_smiles_chem_xlstm(smiles)
    assert repr(dropped) in str(err.value) and "\n" not in str(err.value)


def test_tokenizer_with_the_scheme_encodes_refuses_and_round_trips(tmp_path):
    tokenizer = SmilesTokenizer((*SPECIALS, "C", "F", "=", "/", "[", "H", "]"), CHEM_XLSTM_REGEX)
    assert tokenizer.encode("F/C=CF") == [5, 7, 4, 6, 4, 5]
    for strict in (True, False):
        with pytest.raises(SmilesVocabularyError, match="drops"):
            tokenizer.encode("F/C=C\\F", strict=strict)
    assert tokenizer.unknown_tokens("F/C=C\\F") == ["\\"]
    assert tokenizer.unknown_tokens("C[Hg]") == ["g"]
    assert chem_xlstm_pieces("C[Hg]") == ["C", "[", "H", "g", "]"]
    tokenizer.save(tmp_path)
    assert json.loads((tmp_path / "tokenizer.json").read_text())["type"] == CHEM_XLSTM_REGEX
    assert SmilesTokenizer.load(tmp_path) == tokenizer
    (tmp_path / "tokenizer.json").write_text(json.dumps({"type": "bpe", "tokens": list(SPECIALS)}))
    with pytest.raises(SmilesVocabularyError, match="unknown tokenizer type 'bpe'"):
        SmilesTokenizer.load(tmp_path)
