"""Optional dependencies: a missing one stops the command in one line naming the extra to install."""

from __future__ import annotations

import sys

import pytest

from bioxlstm import datasets
from bioxlstm.cli import main
from bioxlstm.extras import MissingExtraError, require

GENOME = str(datasets.path("human_demo_genome"))


def test_require_imports_or_names_the_extra(monkeypatch):
    assert require("json", "dna", "x").dumps([1]) == "[1]"
    monkeypatch.setitem(sys.modules, "pyfaidx", None)
    with pytest.raises(MissingExtraError, match=r"reading a genome FASTA needs the pyfaidx package: "
                                                r"pip install 'bioxlstm\[dna\]'"):
        require("pyfaidx", "dna", "reading a genome FASTA")


@pytest.mark.parametrize("module, extra, argv", [
    ("pyfaidx", "dna", ["pretrain", "--preset", "tiny-mlstm", "--genome", GENOME, "--valid-chroms",
                        "chr22", "--steps", "1"]),
    ("rdkit", "chem", ["pretrain", "--preset", "tiny-chem-xlstm", "--smiles",
                       str(datasets.path("chembl_valid_2k")), "--steps", "1"]),
    ("matplotlib", "plot", ["plot", "RUN"]),
])
def test_a_command_without_its_extra_fails_in_one_line(tmp_path, monkeypatch, capsys, module, extra,
                                                      argv):
    import json

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0, "lr": 1e-3}) + "\n")
    monkeypatch.setitem(sys.modules, module, None)
    argv = [str(run) if a == "RUN" else a for a in argv]
    if argv[0] == "pretrain":
        argv += ["--run-dir", str(tmp_path / "r"), "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"pip install 'bioxlstm[{extra}]'" in err
