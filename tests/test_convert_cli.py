"""The commands on converted official checkpoints: `bioxlstm convert` writes an ordinary checkpoint,
and score, embed, fitness and generate run on it, or on the official files directly (converted in
memory, said in one line)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bioxlstm import XLSTMLanguageModel
from bioxlstm.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "official"
SOURCES = {
    "dna-causal": FIXTURES / "dna/slstm_causal/cuda/checkpoints/test/loss.ckpt",
    "dna-mlstm": FIXTURES / "dna/mlstm_causal",  # the run directory: its checkpoints/test/loss.ckpt
    "dna-rcps": FIXTURES / "dna/slstm_rcps/cuda/checkpoints/test/loss.ckpt",
    "prot": FIXTURES / "prot/rope",
    "chem": FIXTURES / "chem/default",
}
WT = "MKTAYIAKQRQISFVKSHFSRQ"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("converted")
    for name, src in SOURCES.items():
        assert main(["convert", str(src), "--out", str(root / name)]) == 0
    return root


def test_convert_writes_an_ordinary_checkpoint_with_its_provenance(checkpoints):
    for name, family in (("dna-rcps", "dna"), ("prot", "prot"), ("chem", "chem")):
        files = {p.name for p in (checkpoints / name).iterdir()}
        assert {"config.json", "model.safetensors", "README.md"} <= files
        if family == "chem":
            vocabulary = json.loads((checkpoints / name / "tokenizer.json").read_text())
            assert vocabulary["type"] == "chem-xlstm-regex"
        source = json.loads((checkpoints / name / "config.json").read_text())["source"]
        assert source["family"] == family and source["official_config"]
    source = json.loads((checkpoints / "dna-rcps" / "config.json").read_text())["source"]
    assert source["file"] == "loss.ckpt" and source["config_from"] == "model_config.json"
    assert source["slstm_layout"] == "cuda" and source["verified_against"] == "ml-jku/DNA-xLSTM@06820ec"


def test_official_files_load_directly_and_say_so(checkpoints, capsys):
    ids = torch.tensor([[1, 7, 8, 9, 10, 7, 7]])
    direct = XLSTMLanguageModel.from_pretrained(SOURCES["dna-rcps"]).eval()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "converting the official DNA-xLSTM checkpoint" in err
    saved = XLSTMLanguageModel.from_pretrained(checkpoints / "dna-rcps").eval()
    with torch.no_grad():
        assert torch.equal(direct(ids).logits, saved(ids).logits)


def test_score_and_embed(checkpoints, tmp_path, capsys):
    fasta = tmp_path / "seqs.fa"
    fasta.write_text(">a\nACGTTGCAAGGCTTAACG\n>b\nTTGACNGA\n")
    out = {}
    for ckpt in (checkpoints / "dna-causal", SOURCES["dna-causal"]):
        assert main(["score", str(ckpt), "--fasta", str(fasta), "--out", str(tmp_path / "s.tsv")]) == 0
        out[ckpt] = (tmp_path / "s.tsv").read_text()
    assert len(set(out.values())) == 1 and out[SOURCES["dna-causal"]].count("\n") == 3
    assert "converting the official DNA-xLSTM checkpoint" in capsys.readouterr().err
    for name in ("dna-rcps", "dna-mlstm"):
        emb = tmp_path / f"{name}.npy"
        assert main(["embed", str(checkpoints / name), "--fasta", str(fasta), "--out", str(emb)]) == 0
        assert np.load(emb).shape[0] == 2
    prot = tmp_path / "prot.fa"
    prot.write_text(f">p\n{WT}\n")
    assert main(["embed", str(SOURCES["prot"]), "--fasta", str(prot), "--out", str(tmp_path / "p.npy")]) == 0
    assert np.load(tmp_path / "p.npy").shape == (1, 64)


def test_fitness(checkpoints, tmp_path, capsys):
    dms = tmp_path / "dms.csv"
    dms.write_text("mutant,DMS_score\nK2A,0.1\nS13W,-0.5\nT3V,0.3\nA4G,-0.2\n")
    msa = tmp_path / "fam.a3m"
    msa.write_text(f">wt\n{WT}\n>h1\nMKTAWIAKQRQLSFVKSHFSRQ\n>h2\nMRTAYIAKQRQISFVKSAFSRQ\n")
    for ckpt in (checkpoints / "prot", SOURCES["prot"]):
        out = tmp_path / "scores.csv"
        assert main(["fitness", str(ckpt), "--dms", str(dms), "--msa", str(msa), "--out", str(out),
                     "--num-homologs", "2", "--replicates", "1", "--device", "cpu"]) == 0
        assert "scored 4 of 4 variants; Spearman" in capsys.readouterr().out
        assert len(out.read_text().splitlines()) == 5


@pytest.mark.parametrize("name, extra, check", [
    ("dna-mlstm", ["--prompt", "ACGT", "--num", "3"], lambda text: text.startswith(">generated_1\nACGT")),
    ("prot", ["--prompt", "MKT", "--num", "3"], lambda text: text.startswith(">generated_1\nMKT")),
    ("chem", ["--num-samples", "3"], lambda text: "[UNK]" not in text and "[PAD]" not in text),
])
def test_generate(checkpoints, tmp_path, capsys, name, extra, check):
    for ckpt in (checkpoints / name, SOURCES[name]):
        out = tmp_path / "gen.txt"
        assert main(["generate", str(ckpt), "--length", "20", "--seed", "1", *extra, "--out", str(out)]) == 0
        text = out.read_text()
        assert check(text) and len(text.splitlines()) in (3, 6)


def test_in_context_marks_a_chem_model_and_is_refused_where_it_cannot_apply(tmp_path, capsys):
    icl = tmp_path / "icl_official"  # the fixture with '.' in its vocabulary, as the ICL model has
    shutil.copytree(SOURCES["chem"], icl)
    args = json.loads((icl / "init_arguments.json").read_text())
    args["token2label"]["."] = len(args["token2label"])
    (icl / "init_arguments.json").write_text(json.dumps(args))
    assert main(["convert", str(icl), "--out", str(tmp_path / "icl"), "--in-context"]) == 0
    assert json.loads((tmp_path / "icl" / "tokenizer.json").read_text())["in_context"] is True
    assert main(["generate", str(tmp_path / "icl"), "--num-samples", "2", "--seed", "1",
                 "--out", str(tmp_path / "gen.smi")]) == 0
    assert main(["convert", str(icl), "--out", str(tmp_path / "plain")]) == 0
    assert json.loads((tmp_path / "plain" / "tokenizer.json").read_text())["in_context"] is False
    capsys.readouterr()
    for src, message in ((SOURCES["prot"], "--in-context applies to Chem-xLSTM"),
                         (SOURCES["chem"], "needs '.', which joins the molecules")):
        assert main(["convert", str(src), "--out", str(tmp_path / "no"), "--in-context"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err
        assert not (tmp_path / "no" / "config.json").exists()
