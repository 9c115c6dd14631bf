"""Property-based hostile input: every parser either parses or raises the project's own one-line error.

Random and mutated files go through the FASTA, BED, labelled-table, variant-table, MSA (a3m,
Stockholm, aligned FASTA), DMS-assay, SMILES and config readers, the SMILES tokenizer, mutant
parsing and the encoders; any exception other than a BioXLSTMError is a bug.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bioxlstm.alphabets import DNA, PROTEIN, encode_dna
from bioxlstm.config import ModelConfig
from bioxlstm.data.dms import check_mutant, read_assay
from bioxlstm.data.fasta import read_fasta
from bioxlstm.data.intervals import read_intervals
from bioxlstm.data.labelled import read_labelled
from bioxlstm.data.msa import read_family
from bioxlstm.data.smiles import read_domains, read_smiles, valid_smiles
from bioxlstm.errors import BioXLSTMError
from bioxlstm.smiles import SmilesTokenizer, split_smiles
from bioxlstm.tasks.variants import read_variant_table
from bioxlstm.train import TrainConfig

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

# text built from the pieces these formats are made of, so many examples come near a valid file
FORMAT_PIECES = st.sampled_from([">", ">r1", ">r2 label=1", "\n", "\t", ",", " ", "ACGT", "acgtn",
                                 "N", "X", "chr1", "0", "100", "-5", "1e3", "train", "valid", "test",
                                 "sequence,label", "chrom\tpos\tref\talt", "#", "\r\n", "é", "\x00",
                                 "vocab_size: 12", "d_model: -1", "preset: tiny-mlstm", ": [", "{",
                                 "1.5", "label", "pos", "ref", "alt", "A", "G", "# STOCKHOLM 1.0", "//",
                                 "#=GF ID x", "mutant,DMS_score", "A23V", "A23V:G45W", "-", ".",
                                 "MKLV", "mklv", "c1ccccc1", "[NH3+]", "Cl", "%10", "C(=O)O", "/",
                                 "@", "\\"])
TEXT = st.one_of(st.text(max_size=200), st.lists(FORMAT_PIECES, max_size=40).map("".join))


def _write(tmp: Path, name: str, data: str, compress: bool) -> Path:
    path = tmp / (name + (".gz" if compress else ""))
    raw = data.encode("utf-8", errors="surrogatepass")
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def _parses_or_fails_cleanly(fn, *args) -> None:
    try:
        fn(*args)
    except BioXLSTMError as err:
        assert "\n" not in str(err).strip(), f"multi-line error: {err!r}"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile")


@SETTINGS
@given(text=TEXT, compress=st.booleans())
def test_fasta_reader(scratch, text, compress):
    path = _write(scratch, "x.fa", text, compress)
    _parses_or_fails_cleanly(lambda p: [DNA.encode(s, n) for n, s in read_fasta(p)], path)


@SETTINGS
@given(text=TEXT, compress=st.booleans())
def test_bed_reader(scratch, text, compress):
    path = _write(scratch, "x.bed", text, compress)
    _parses_or_fails_cleanly(read_intervals, path, {"chr1": 1000, "r1": 50})


@SETTINGS
@given(text=TEXT, suffix=st.sampled_from([".csv", ".tsv", ".fa"]), compress=st.booleans())
def test_labelled_reader(scratch, text, suffix, compress):
    path = _write(scratch, "x" + suffix, text, compress)
    _parses_or_fails_cleanly(read_labelled, path)


@SETTINGS
@given(text=TEXT, suffix=st.sampled_from([".tsv", ".csv", ".vcf"]), compress=st.booleans())
def test_variant_table_reader(scratch, text, suffix, compress):
    path = _write(scratch, "x" + suffix, text, compress)
    _parses_or_fails_cleanly(read_variant_table, path)


@SETTINGS
@given(text=TEXT)
def test_config_readers(scratch, text):
    path = _write(scratch, "x.yaml", text, compress=False)
    _parses_or_fails_cleanly(ModelConfig.from_file, path)
    _parses_or_fails_cleanly(TrainConfig.from_file, path)


@SETTINGS
@given(text=st.text(max_size=100))
def test_encoders_agree_and_fail_cleanly(text):
    try:
        expected = DNA.encode(text)
    except BioXLSTMError:
        expected = None
    try:
        got = encode_dna(text).tolist()
    except BioXLSTMError:
        got = None
    assert got == expected
    _parses_or_fails_cleanly(PROTEIN.encode, text)


@SETTINGS
@given(text=TEXT, suffix=st.sampled_from([".a3m", ".sto", ".fasta"]), compress=st.booleans())
def test_msa_readers(scratch, text, suffix, compress):
    path = _write(scratch, "x" + suffix, text, compress)
    _parses_or_fails_cleanly(read_family, path)


@SETTINGS
@given(text=TEXT, compress=st.booleans())
def test_dms_assay_reader(scratch, text, compress):
    path = _write(scratch, "x.csv", text, compress)
    _parses_or_fails_cleanly(read_assay, path)


@SETTINGS
@given(mutant=st.one_of(st.text(max_size=20), st.lists(FORMAT_PIECES, max_size=4).map("".join)),
       first=st.integers(-3, 3))
def test_mutant_parsing(mutant, first):
    _parses_or_fails_cleanly(check_mutant, mutant, "MKLVAGA", first)


@SETTINGS
@given(text=TEXT, compress=st.booleans())
def test_smiles_readers_and_tokenizer(scratch, text, compress):
    path = _write(scratch, "x.smi", text, compress)
    _parses_or_fails_cleanly(lambda p: list(valid_smiles(read_smiles(p))), path)
    _parses_or_fails_cleanly(read_domains, path)
    tokenizer = SmilesTokenizer.build(["CCO", "c1ccccc1", "[NH3+]Cl"])
    for line in text.splitlines():
        _parses_or_fails_cleanly(lambda s: tokenizer.decode(tokenizer.encode(s)), line)
        _parses_or_fails_cleanly(split_smiles, line)


def test_errors_quoting_multi_line_reasons_stay_on_one_line(scratch):
    assert str(BioXLSTMError("reason:\n  detail\n")) == "reason: detail"
    path = _write(scratch, "found.sto", "# STOCKHOLM 1.0\n0", compress=False)
    with pytest.raises(BioXLSTMError) as err:
        read_family(path)
    assert "\n" not in str(err.value)
