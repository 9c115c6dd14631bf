"""Scoring: sequence log-likelihoods and variant LLRs on the bundled genome, with a tiny model."""

from pathlib import Path

import numpy as np
import pytest
import torch

from bioxlstm import XLSTMLanguageModel, datasets, preset
from bioxlstm.alphabets import DNA
from bioxlstm.cli import main
from bioxlstm.data.genome import Genome
from bioxlstm.tasks.score import ScoreConfig, ScoreModelError, score_fasta, score_variants
from bioxlstm.tasks.variants import VariantTableError

GENOME = datasets.path("human_demo_genome")
CHR = "chr22_32000001_32300000"
CFG = dict(progress=False, device="cpu")


@pytest.fixture(scope="module")
def model(checkpoint):
    return XLSTMLanguageModel.from_pretrained(checkpoint).eval()


def log_p(model, seq):
    """log p(seq) with the record separator in front: every base is scored."""
    return float(model.log_likelihood(torch.tensor([[DNA.id("[SEP]"), *DNA.encode(seq)]]))[0])


def read_tsv(path):
    lines = Path(path).read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:]]


def test_score_fasta_matches_the_model_and_chunking(tmp_path, checkpoint, model):
    seqs = {"a": "ACGTTGCAAC" * 30, "b": "GGGTTA", "c": "ACGN" * 11}
    fasta = tmp_path / "x.fa"
    fasta.write_text("".join(f">{k}\n{v}\n" for k, v in seqs.items()))
    assert score_fasta(fasta, checkpoint, tmp_path / "whole.tsv", ScoreConfig(**CFG)) == 3
    score_fasta(fasta, checkpoint, tmp_path / "chunked.tsv",
                ScoreConfig(chunk_tokens=32, batch_size=2, **CFG))
    whole, chunked = read_tsv(tmp_path / "whole.tsv"), read_tsv(tmp_path / "chunked.tsv")
    assert [r["id"] for r in whole] == list(seqs)
    for row, piecewise, seq in zip(whole, chunked, seqs.values()):
        total = log_p(model, seq)
        assert int(row["length"]) == len(seq)
        assert float(row["log_likelihood"]) == pytest.approx(total, abs=1e-3)
        assert float(piecewise["log_likelihood"]) == pytest.approx(total, abs=1e-3)
        assert float(row["perplexity"]) == pytest.approx(np.exp(-total / len(seq)), rel=1e-3)


def test_variant_llr_is_the_window_difference_and_rows_align(tmp_path, checkpoint, model):
    genome = Genome(GENOME)
    window = 101
    pos = 150_001  # 1-based
    ref = genome.fetch(CHR, pos - 1, pos)
    alt = "A" if ref != "A" else "C"
    wrong = "G" if ref != "G" else "T"
    edge_ref = genome.fetch(CHR, 0, 1)
    mnv_ref = genome.fetch(CHR, pos + 9, pos + 12)
    table = tmp_path / "v.tsv"
    rows = [
        (CHR, pos, ref, alt, "snv"),
        (CHR, pos, ref, ref, "same"),
        (CHR, pos, wrong, alt, "wrong_ref"),
        ("chrZ", 5, "A", "C", "no_chrom"),
        (CHR, 300_001, "A", "C", "off_end"),
        (CHR, pos, ref, ref + "T", "insertion"),
        (CHR, pos, ref, "A,C", "multi"),
        (CHR, "x", "A", "C", "bad_pos"),
        (CHR, 1, edge_ref, "A" if edge_ref != "A" else "C", "edge"),
        (CHR, pos + 10, mnv_ref.lower(), mnv_ref[::-1].translate(str.maketrans("ACGT", "CATG")), "mnv"),
    ]
    table.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tREF\tALT\tNOTE\n"
                     + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    summary = score_variants(table, GENOME, checkpoint, tmp_path / "out.tsv",
                             ScoreConfig(window=window, batch_size=2, **CFG))
    assert summary.rows == 10 and summary.scored == 4
    assert summary.skipped == {"ref_mismatch": 1, "unknown_chrom": 1, "off_chrom": 1, "indel": 1,
                               "multiallelic": 1, "bad_pos": 1}
    assert summary.line().startswith("scored 4 of 10 variants; skipped: 1 bad_pos")
    out = read_tsv(tmp_path / "out.tsv")
    assert [r["NOTE"] for r in out] == [r[4] for r in rows]
    assert list(out[0])[:5] == ["#CHROM", "POS", "REF", "ALT", "NOTE"]
    status = {r["NOTE"]: r["status"] for r in out}
    assert status == {"snv": "ok", "same": "ok", "wrong_ref": "ref_mismatch",
                      "no_chrom": "unknown_chrom", "off_end": "off_chrom", "insertion": "indel",
                      "multi": "multiallelic", "bad_pos": "bad_pos", "edge": "ok", "mnv": "ok"}
    assert f"the genome has {ref} at" in out[2]["message"] and out[2]["llr"] == ""
    assert float(out[1]["llr"]) == pytest.approx(0.0, abs=1e-6)

    ref_window = genome.fetch(CHR, pos - 1 - 50, pos + 50)
    assert ref_window[50] == ref
    alt_window = ref_window[:50] + alt + ref_window[51:]
    forward = log_p(model, alt_window) - log_p(model, ref_window)
    assert float(out[0]["llr_forward"]) == pytest.approx(forward, abs=1e-3)
    rc = str.maketrans("ACGTN", "TGCAN")
    reverse = log_p(model, alt_window.translate(rc)[::-1]) - log_p(model, ref_window.translate(rc)[::-1])
    assert float(out[0]["llr_reverse"]) == pytest.approx(reverse, abs=1e-3)
    assert float(out[0]["llr"]) == pytest.approx((forward + reverse) / 2, abs=1e-3)
    assert forward != pytest.approx(reverse, abs=1e-4)  # the strands really differ

    edge_window = genome.fetch(CHR, 0, 51)  # clipped at the chromosome start
    edge_alt = rows[8][3] + edge_window[1:]
    assert float(out[8]["llr_forward"]) == pytest.approx(
        log_p(model, edge_alt) - log_p(model, edge_window), abs=1e-3)
    genome.close()


def test_strand_averaging_is_symmetric(tmp_path, checkpoint):
    rng = np.random.default_rng(0)
    seq = "".join(rng.choice(list("ACGT"), size=301))
    rc = seq.translate(str.maketrans("ACGT", "TGCA"))[::-1]
    fasta = tmp_path / "g.fa"
    fasta.write_text(f">plus\n{seq}\n>minus\n{rc}\n")
    comp = str.maketrans("ACGT", "TGCA")
    rows = []
    for p0 in (150, 10, 290):  # 0-based; windows clipped differently near the ends
        alt = "A" if seq[p0] != "A" else "G"
        rows.append(f"plus\t{p0 + 1}\t{seq[p0]}\t{alt}")
        rows.append(f"minus\t{301 - p0}\t{seq[p0].translate(comp)}\t{alt.translate(comp)}")
    table = tmp_path / "v.tsv"
    table.write_text("chrom\tpos\tref\talt\n" + "\n".join(rows) + "\n")
    score_variants(table, fasta, checkpoint, tmp_path / "out.tsv", ScoreConfig(window=101, **CFG))
    out = read_tsv(tmp_path / "out.tsv")
    for plus, minus in zip(out[::2], out[1::2]):
        assert plus["status"] == minus["status"] == "ok"
        assert float(plus["llr"]) == pytest.approx(float(minus["llr"]), abs=1e-4)
        assert float(plus["llr_forward"]) == pytest.approx(float(minus["llr_reverse"]), abs=1e-4)


def test_score_refuses_models_that_see_ahead_and_bad_tables(tmp_path, checkpoint):
    bidir = tmp_path / "bidir"
    XLSTMLanguageModel(preset("tiny-mlstm", bidirectional=True)).save_pretrained(bidir)
    fasta = tmp_path / "x.fa"
    fasta.write_text(">a\nACGT\n")
    with pytest.raises(ScoreModelError, match="causal model"):
        score_fasta(fasta, bidir, tmp_path / "o.tsv", ScoreConfig(**CFG))
    table = tmp_path / "v.csv"
    table.write_text("chrom,position,ref\nchr1,5,A\n")
    with pytest.raises(VariantTableError, match=r"v.csv, line 1: no 'alt' column"):
        score_variants(table, GENOME, checkpoint, tmp_path / "o.tsv", ScoreConfig(**CFG))


def test_cli_score_fasta_to_stdout_and_variants(tmp_path, checkpoint, capsys):
    fasta = tmp_path / "x.fa"
    fasta.write_text(">a\nACGTACGT\n>b\nGGCC\n")
    assert main(["score", str(checkpoint), "--fasta", str(fasta), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0].split("\t") == ["id", "length", "log_likelihood", "mean_log_likelihood",
                                    "perplexity"]
    assert [line.split("\t")[0] for line in lines[1:]] == ["a", "b"]
    assert "scored 2 sequences" in captured.err

    table = tmp_path / "v.csv"
    table.write_text(f"chrom,pos,ref,alt\n{CHR},1000,N,A\nchrZ,1,A,C\n")
    out = tmp_path / "o.tsv"
    assert main(["score", str(checkpoint), "--variants", str(table), "--genome", str(GENOME),
                 "--out", str(out), "--window", "64", "--device", "cpu"]) == 0
    assert "variants; skipped:" in capsys.readouterr().err
    assert len(read_tsv(out)) == 2


def test_cli_score_errors_and_help(tmp_path, checkpoint, capsys):
    table = tmp_path / "v.csv"
    table.write_text("chrom,pos,ref,alt\n")
    assert main(["score", str(checkpoint), "--variants", str(table)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bioxlstm: error:") and "--genome" in err and err.count("\n") == 1
    assert main(["score", str(tmp_path / "nope"), "--fasta", str(table)]) == 2
    assert "config.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    assert "--variants" in capsys.readouterr().out
