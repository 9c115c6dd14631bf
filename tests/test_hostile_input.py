"""Property-based hostile input: every parser either parses or raises the project's own one-line error.

Random and mutated files go through the FASTA, BED, labelled-table, variant-table and config
readers and the DNA encoders; any exception other than a BioXLSTMError is a bug.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bioxlstm.alphabets import DNA, PROTEIN, encode_dna
from bioxlstm.config import ModelConfig
from bioxlstm.data.fasta import read_fasta
from bioxlstm.data.intervals import read_intervals
from bioxlstm.data.labelled import read_labelled
from bioxlstm.errors import BioXLSTMError
from bioxlstm.tasks.variants import read_variant_table
from bioxlstm.train import TrainConfig

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

# text built from the pieces these formats are made of, so many examples come near a valid file
FORMAT_PIECES = st.sampled_from([">", ">r1", ">r2 label=1", "\n", "\t", ",", " ", "ACGT", "acgtn",
                                 "N", "X", "chr1", "0", "100", "-5", "1e3", "train", "valid", "test",
                                 "sequence,label", "chrom\tpos\tref\talt", "#", "\r\n", "é", "\x00",
                                 "vocab_size: 12", "d_model: -1", "preset: tiny-mlstm", ": [", "{",
                                 "1.5", "label", "pos", "ref", "alt", "A", "G"])
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
