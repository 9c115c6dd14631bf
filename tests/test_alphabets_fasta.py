"""DNA/protein alphabets, the FASTA reader and the k-mer baseline."""

import gzip
import math
import re

import pytest
import torch

from bioxlstm.alphabets import DNA, PROTEIN, AlphabetError, encode_dna, get_alphabet
from bioxlstm.baselines.kmer import KmerModel
from bioxlstm.data.fasta import FastaError, read_fasta


def test_dna_ids_follow_the_spec():
    assert DNA.encode("ACGTN") == [7, 8, 9, 10, 11] and len(DNA) == 12
    assert DNA.encode("acgtn") == DNA.encode("ACGTN")
    assert DNA.encode("RYK") == [11, 11, 11]
    assert DNA.id("[MASK]") == 3 and DNA.id("[PAD]") == 4
    comp = DNA.complement_ids()
    assert [DNA.tokens[comp[DNA.id(b)]] for b in "ACGTN"] == list("TGCAN")
    assert comp[DNA.id("[SEP]")] == DNA.id("[SEP]")
    assert DNA.decode([2, 7, 8, 9]) == "ACG"


def test_protein_ids_follow_the_spec():
    assert len(PROTEIN) == 38
    assert PROTEIN.encode("LAC") == [4, 5, 23]
    assert PROTEIN.id("<mask-1>") == 33 and PROTEIN.id("-") == 30
    assert get_alphabet("Protein") is PROTEIN


def test_bad_character_names_record_and_position():
    with pytest.raises(AlphabetError, match="record 'chr1', position 3: character '!'"):
        DNA.encode("AC!T", record="chr1")
    with pytest.raises(AlphabetError, match="unknown alphabet"):
        get_alphabet("rna")


def test_encode_dna_matches_encode_on_bases_soft_masking_and_iupac():
    letters = "ACGTNacgtnRYSWKMBDHVryswkmbdhv"
    g = torch.Generator().manual_seed(0)
    text = "".join(letters[j] for j in torch.randint(0, len(letters), (5000,), generator=g))
    ids = encode_dna(text)
    assert ids.dtype == torch.long and ids.tolist() == DNA.encode(text)
    assert encode_dna("acgtn").tolist() == [7, 8, 9, 10, 11] and encode_dna("").numel() == 0


@pytest.mark.parametrize("text,position", [("AC!T", 3), ("ACGé", 4), ("AC[MASK]", 3),
                                           ("ACG T", 4), ("ACGU", 4)])
def test_encode_dna_names_record_and_position_of_a_bad_character(text, position):
    bad = re.escape(repr(text[position - 1]))
    with pytest.raises(AlphabetError, match=rf"^record 'chr1:11-20', position {position}: "
                                            rf"character {bad} is not in the DNA alphabet$"):
        encode_dna(text, record="chr1:11-20")
    with pytest.raises(AlphabetError, match=rf"position {position}: character {bad}"):
        DNA.encode(text)


def test_fasta_plain_and_gzip(tmp_path):
    text = ">a desc\nACGT\nAC\n\n>b\nGG\n"
    (tmp_path / "x.fa").write_text(text)
    with gzip.open(tmp_path / "x.fa.gz", "wt") as fh:
        fh.write(text)
    for name in ("x.fa", "x.fa.gz"):
        assert list(read_fasta(tmp_path / name)) == [("a", "ACGTAC"), ("b", "GG")]


@pytest.mark.parametrize("text,message", [
    ("", "no FASTA records"), ("ACGT\n", "before the first"), (">a\n>b\nAC\n", "'a' has no sequence"),
])
def test_fasta_errors(tmp_path, text, message):
    path = tmp_path / "bad.fa"
    path.write_text(text)
    with pytest.raises(FastaError, match=message):
        list(read_fasta(path))


def test_kmer_model_learns_a_periodic_sequence():
    tokens = torch.tensor([7, 8, 9, 10] * 200)
    assert KmerModel(0, 12).fit(tokens).nll(tokens) == pytest.approx(math.log(4), rel=0.05)
    assert KmerModel(2, 12).fit(tokens).nll(tokens) < 0.01


def test_a_character_that_uppercases_to_two_is_refused_at_its_position():
    with pytest.raises(AlphabetError, match="position 2: character 'ß'"):
        DNA.encode("AßC")


def test_kmer_model_counts_bases_only_and_reaches_high_orders():
    from bioxlstm.alphabets import encode_dna

    rng = torch.Generator().manual_seed(0)
    motif = "".join("ACGT"[j] for j in torch.randint(0, 4, (12,), generator=rng))
    text = "".join(motif if j % 3 else "N" + motif for j in range(400))
    tokens = encode_dna(text)
    bases = [DNA.id(b) for b in "ACGT"]
    for k in (0, 6, 8, 10):
        assert KmerModel(k, bases).fit(tokens).nll(tokens) <= math.log(4) + 1e-9
    # an order-10 model predicts the 12-base motif almost perfectly, N positions are skipped
    assert KmerModel(10, bases).fit(tokens).nll(tokens) < 0.01
    with pytest.raises(ValueError, match="symbols in a row"):
        KmerModel(3, bases).fit(tokens).nll(encode_dna("ACNNAC"))
