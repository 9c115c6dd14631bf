"""Variant fitness: FIM query by hand, context encoding in chunks, weights, assay errors, the CLI."""

import math

import numpy as np
import pytest
import torch

from bioxlstm import XLSTMLanguageModel, preset
from bioxlstm.alphabets import PROTEIN
from bioxlstm.cli import main
from bioxlstm.data.dms import AssayError, check_mutant, read_assay
from bioxlstm.data.homologs import sample_homologs, sequence_weights
from bioxlstm.data.msa import AMINO_ACIDS, Family
from bioxlstm.tasks.fitness import FitnessConfig, FitnessError, score_assay, spearman
from bioxlstm.tasks.homolog_context import context_tokens, encode_context, expand_state

WT = "MKTAYIAKQRQISFVKSH"


@pytest.fixture
def model():
    torch.manual_seed(0)
    return XLSTMLanguageModel(preset("tiny-mlstm", alphabet="protein", vocab_size=38, rope=True)).eval()


def hand_score(model, wt, pos1, mut, context=None):
    """log p(mut) - log p(wt) at 1-based pos1, query built token by token from docs/model.md section 7."""
    p = pos1 - 1
    ids = lambda s: [PROTEIN.id(c) for c in s]  # noqa: E731
    tokens = ([PROTEIN.id("<cls>")] + ids(wt[:p]) + [PROTEIN.id("<mask-1>")] + ids(wt[p + 1:])
              + [PROTEIN.id("<eos>"), PROTEIN.id("<mask-1>")])
    positions = list(range(0, p + 1)) + [p + 1] + list(range(p + 2, len(wt) + 1)) + [0, p + 1]
    prefix_t, prefix_p = [], []
    for seq in context or []:
        prefix_t += [PROTEIN.id("<cls>")] + ids(seq)
        prefix_p += list(range(len(seq) + 1))
    with torch.no_grad():
        logits = model(torch.tensor([prefix_t + tokens]),
                       position_ids=torch.tensor([prefix_p + positions])).logits[0, -1]
    aa = torch.tensor(ids(AMINO_ACIDS))
    logp = logits[aa].log_softmax(-1)
    return float(logp[AMINO_ACIDS.index(mut)] - logp[AMINO_ACIDS.index(wt[p])])


def test_zero_context_score_equals_hand_computed_fim_query(model):
    config = FitnessConfig(num_homologs=0, progress=False, batch_size=3)
    result = score_assay(model, WT, ["K2A", "S13W", "M1L:H18C"], None, config)
    assert result.scores[0] == pytest.approx(hand_score(model, WT, 2, "A"), abs=1e-5)
    assert result.scores[1] == pytest.approx(hand_score(model, WT, 13, "W"), abs=1e-5)
    double = hand_score(model, WT, 1, "L") + hand_score(model, WT, 18, "C")
    assert result.scores[2] == pytest.approx(double, abs=1e-5)


def test_context_score_equals_hand_computed_query_after_homologs(model):
    homolog = "MKTAWIAKQRQLSFV"
    family = Family("fam", ["wt", "h"], [WT, homolog], [WT[:15], homolog])
    config = FitnessConfig(num_homologs=5, replicates=1, progress=False, chunk_tokens=7)
    result = score_assay(model, WT, ["Y5G"], family, config)
    assert result.scores[0] == pytest.approx(hand_score(model, WT, 5, "G", [homolog, WT]), abs=1e-5)


def test_chunked_context_encoding_equals_one_shot(model):
    tokens, positions = context_tokens(["MKTAYIAKQR", "MKVLAAGGW", "GAVLIMKRTPPQ"])
    one_state, one_logits = encode_context(model, tokens, positions, chunk_tokens=10_000)
    for chunk in (1, 5, 16):
        state, logits = encode_context(model, tokens, positions, chunk_tokens=chunk)
        assert torch.allclose(logits, one_logits, atol=1e-5)
    query = torch.tensor([[PROTEIN.id("<cls>"), PROTEIN.id("M")]] * 3)
    pos = torch.tensor([[0, 1]] * 3)
    with torch.no_grad():
        a = model(query, state=expand_state(one_state, 3), position_ids=pos).logits
        full = model(torch.cat([tokens, query[0]])[None],
                     position_ids=torch.cat([positions, pos[0]])[None]).logits[0, -2:]
    assert torch.allclose(a[1], full, atol=1e-5) and torch.allclose(a[0], a[2], atol=1e-5)


def test_bad_rows_are_reported_not_scored(model):
    result = score_assay(model, WT, ["K2A", "A2V", "K99A", "K2*", "junk"], None,
                         FitnessConfig(num_homologs=0, progress=False))
    assert result.statuses == ["ok", "wt_mismatch", "off_sequence", "invalid", "invalid"]
    assert all(math.isnan(s) for s in result.scores[1:]) and "is K in the wild type" in result.messages[1]
    with pytest.raises(FitnessError, match="do not fit the wild type"):
        score_assay(model, WT, ["A2V", "A3V", "K2A"], None, FitnessConfig(num_homologs=0))


def test_first_position_shifts_numbering():
    assert check_mutant("K127A", WT, first_position=126).substitutions == ((1, "K", "A"),)
    assert check_mutant("K2A", WT, first_position=126).status == "off_sequence"


def test_sequence_weights_by_hand():
    rows = ["AAAAAAAAAA", "AAAAAAAAAC", "CCCCCCCCCC", "CCCCC-----"]
    # rows 0,1 share 9/10 (>= 0.8); row 3 matches row 2 on 5 of its 5 residues
    # but row 2 matches row 3 on 5 of 10
    assert sequence_weights(rows).tolist() == pytest.approx([0.5, 0.5, 1.0, 0.5])
    family = Family("f", list("abcd"), [r.replace("-", "") for r in rows], rows)
    picks = sample_homologs(family, 10, torch.Generator().manual_seed(0), exclude="CCCCCCCCCC")
    assert sorted(picks) == sorted(["AAAAAAAAAA", "AAAAAAAAAC", "CCCCC"])


def test_spearman_by_hand_with_ties():
    x = np.array([1.0, 2.0, 2.0, 4.0, np.nan])
    y = np.array([10.0, 30.0, 20.0, 40.0, 1.0])
    # ranks x: 0, 1.5, 1.5, 3; y: 0, 2, 1, 3
    rx, ry = np.array([0, 1.5, 1.5, 3]), np.array([0, 2, 1, 3.0])
    assert spearman(x, y) == pytest.approx(np.corrcoef(rx, ry)[0, 1])


def test_assay_reader(tmp_path):
    good = tmp_path / "a.csv"
    good.write_text("mutant,DMS_score\nK2A,0.5\nK2A:S13W,-1\n")
    assay = read_assay(good)
    assert assay.mutants == ["K2A", "K2A:S13W"] and assay.scores == [0.5, -1.0]
    plain = tmp_path / "list.txt"
    plain.write_text("K2A\nS13W\n")
    assert read_assay(plain).scores is None
    no_score = tmp_path / "b.csv"
    no_score.write_text("mutant,log\nK2A,0.5\n")
    with pytest.raises(AssayError, match="no score column 'DMS_score'"):
        read_assay(no_score)
    assert read_assay(no_score, "log").scores == [0.5]


def test_fitness_cli_zero_context_and_with_msa(tmp_path, model, capsys):
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    msa = tmp_path / "fam.a3m"
    msa.write_text(f">wt\n{WT}\n>h1\nMKTAWIAKQRQLSFVKSH\n>h2\nMRTAYIAKQRQISFVKSA\n")
    dms = tmp_path / "dms.csv"
    dms.write_text("mutant,DMS_score\nK2A,0.1\nS13W,-0.5\nT3V,0.3\nA4G,-0.2\nZ5A,0\n")
    out = tmp_path / "scores.csv"
    assert main(["fitness", str(ckpt), "--dms", str(dms), "--msa", str(msa), "--out", str(out),
                 "--num-homologs", "2", "--replicates", "2", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "scored 4 of 5 variants; Spearman" in captured.out and "skipped Z5A" in captured.err
    lines = out.read_text().splitlines()
    assert lines[0] == "mutant,measured,score,status,message" and len(lines) == 6
    assert main(["fitness", str(ckpt), "--dms", str(dms), "--wt", WT, "--out", str(out)]) == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("mutant,score\nK2A,1\n")
    assert main(["fitness", str(ckpt), "--dms", str(bad), "--wt", WT, "--out", str(out)]) == 2
    assert "no score column" in capsys.readouterr().err


def test_synonymous_and_unmeasured_rows_are_scored_but_left_out_of_the_correlation(tmp_path, model,
                                                                                   capsys):
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    dms = tmp_path / "dms.csv"
    dms.write_text("mutant,DMS_score\nK2A,0.1\nS13W,-0.5\nT3V,0.3\nA4G,-0.2\nK2K,5\nT3A,NA\nA4V,\n")
    out = tmp_path / "scores.csv"
    assert main(["fitness", str(ckpt), "--dms", str(dms), "--wt", WT, "--out", str(out),
                 "--device", "cpu"]) == 0
    summary = capsys.readouterr().out
    assert "scored 7 of 7 variants; Spearman" in summary and "over 4 of them" in summary
    assert "(1 synonymous and 2 without a measurement scored but left out)" in summary
    rows = {line.split(",")[0]: line.split(",") for line in out.read_text().splitlines()[1:]}
    assert rows["K2K"][2:4] == ["0.000000", "synonymous"] and rows["T3A"][3] == "ok"
    assert rows["T3A"][2] and rows["A4V"][2]  # unmeasured rows still get a score
    with_syn = tmp_path / "with.csv"
    assert main(["fitness", str(ckpt), "--dms", str(dms), "--wt", WT, "--out", str(with_syn),
                 "--device", "cpu", "--include-synonymous"]) == 0
    assert "over 5 of them" in capsys.readouterr().out
