"""SMILES tokenizer: exact round trip on every bundled molecule, token boundaries, vocabulary files."""


import pytest

from bioxlstm import datasets
from bioxlstm.data.smiles import read_domains, read_smiles
from bioxlstm.smiles import SPECIALS, SmilesTokenizer, SmilesVocabularyError, split_smiles

CHEM = datasets.path("chembl_train_10k").parent


def bundled_molecules():
    mols = read_smiles(CHEM / "chembl_train_10k.smi.gz") + read_smiles(CHEM / "chembl_valid_2k.smi.gz")
    return mols + [m for d in read_domains(CHEM / "icst_domains_50.txt.gz") for m in d]


def test_round_trip_on_every_bundled_molecule():
    mols = bundled_molecules()
    assert len(mols) > 50_000
    tokenizer = SmilesTokenizer.build(mols)
    for s in mols:
        assert "".join(split_smiles(s)) == s
        assert tokenizer.decode(tokenizer.encode(s)) == s


@pytest.mark.parametrize("smiles, tokens", [
    ("CCl", ["C", "Cl"]),
    ("c1ccBr", ["c", "1", "c", "c", "Br"]),
    ("C%12CC%12", ["C", "%12", "C", "C", "%12"]),
    ("[C@@H](N)O", ["[", "C", "@@", "H", "]", "(", "N", ")", "O"]),
    ("[13CH3-]", ["[", "1", "3", "C", "H", "3", "-", "]"]),
    ("[Na+].[Cl-]", ["[", "Na", "+", "]", ".", "[", "Cl", "-", "]"]),
    ("[nH]1cc[se]c1", ["[", "n", "H", "]", "1", "c", "c", "[", "se", "]", "c", "1"]),
    ("F/C=C\\F", ["F", "/", "C", "=", "C", "\\", "F"]),
    ("C#N", ["C", "#", "N"]),
    ("CSc1ccccc1", ["C", "S", "c", "1", "c", "c", "c", "c", "c", "1"]),
])
def test_token_boundaries(smiles, tokens):
    assert split_smiles(smiles) == tokens


def test_vocabulary_specials_first_and_unknown_tokens():
    tokenizer = SmilesTokenizer.build(["CCO", "c1ccccc1"])
    assert tokenizer.tokens[:4] == SPECIALS and "." in tokenizer.tokens
    assert tokenizer.tokens[4] == "c"  # most frequent first
    with pytest.raises(SmilesVocabularyError, match="'Cl' is not in the model's vocabulary"):
        tokenizer.encode("CCl")
    assert tokenizer.encode("CCl", strict=False)[-1] == tokenizer.unk_id
    assert tokenizer.unknown_tokens("C[Pt]Cl") == ["[", "Pt", "]", "Cl"]
    ids = [tokenizer.bos_id, *tokenizer.encode("CCO"), tokenizer.eos_id, *tokenizer.encode("C")]
    assert tokenizer.decode(ids) == "CCO"


def test_tokenizer_file_round_trip_and_errors(tmp_path):
    tokenizer = SmilesTokenizer.build(["CCO"])
    tokenizer.save(tmp_path / "run")
    assert SmilesTokenizer.load(tmp_path / "run") == tokenizer
    with pytest.raises(SmilesVocabularyError, match="no such file"):
        SmilesTokenizer.load(tmp_path / "run" / "checkpoint")  # no fallback to the run directory
    with pytest.raises(SmilesVocabularyError, match="no such file"):
        SmilesTokenizer.load(tmp_path / "elsewhere")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.json").write_text("{")
    with pytest.raises(SmilesVocabularyError, match="not a readable SMILES tokenizer"):
        SmilesTokenizer.load(tmp_path / "bad")
