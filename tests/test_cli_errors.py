"""Every bad argument and unusable path is refused in one line with exit status 2, before any work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bioxlstm import XLSTMLanguageModel, preset
from bioxlstm.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli_errors")
    torch.manual_seed(0)
    ckpt = root / "ckpt"
    XLSTMLanguageModel(preset("tiny-mlstm")).save_pretrained(ckpt)
    fasta = root / "seq.fa"
    fasta.write_text(">a\n" + "ACGTACGTAC" * 40 + "\n>b\n" + "GGTTACCA" * 40 + "\n")
    a_file = root / "a_file"
    a_file.write_text("x")
    return {"ckpt": ckpt, "fasta": fasta, "file": a_file, "root": root}


def _read_only_dir(tmp_path: Path) -> Path:
    """A directory this process cannot write into (as root, permission bits do not stop writes)."""
    if os.geteuid() != 0:
        path = tmp_path / "ro"
        path.mkdir()
        path.chmod(0o555)
        return path
    probe = Path("/sys/kernel")
    if not probe.is_dir() or os.access(probe, os.W_OK) and _writable(probe):
        pytest.skip("no read-only directory available to root here")
    return probe


def _writable(path: Path) -> bool:
    try:
        (path / ".bioxlstm-probe").touch()
    except OSError:
        return False
    (path / ".bioxlstm-probe").unlink()
    return True


PRETRAIN = ["pretrain", "--preset", "tiny-mlstm", "--device", "cpu", "--steps", "2",
            "--batch-size", "2"]

BAD_ARGUMENTS = [
    (["--seq-len", "0"], "--seq-len: must be an integer >= 2"),
    (["--seq-len", "1"], "--seq-len: must be an integer >= 2"),
    (["--steps", "0"], "--steps: must be an integer >= 1"),
    (["--batch-size", "-2"], "--batch-size: must be an integer >= 1"),
    (["--lr", "-1"], "--lr: must be a number > 0"),
    (["--lr", "nan"], "--lr: must be a number > 0"),
    (["--seed", "-1"], "--seed: must be an integer in [0, 4.29497e+09]"),
    (["--rc-aug", "1.5"], "--rc-aug: must be a number in [0, 1]"),
    (["--valid-fraction", "1"], "--valid-fraction: must be a number in (0, 1)"),
    (["--save-every", "-1"], "--save-every: must be an integer >= 0"),
    (["--save-every-minutes", "-5"], "--save-every-minutes: must be a number >= 0"),
    (["--fim-rate", "x"], "--fim-rate: must be a number >= 0, got 'x'"),
]


@pytest.mark.parametrize("extra, message", BAD_ARGUMENTS)
def test_bad_pretrain_numbers_are_refused_at_parse_time(tmp_path, capsys, files, extra, message):
    with pytest.raises(SystemExit) as exit_:
        main([*PRETRAIN, "--fasta", str(files["fasta"]), "--run-dir", str(tmp_path / "r"), *extra])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "bioxlstm pretrain: error:" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("extra, message", [
    (["--num", "0"], "--num: must be an integer >= 1"),
    (["--num", "-1"], "--num: must be an integer >= 1"),
    (["--length", "-3"], "--length: must be an integer >= 1"),
    (["--top-k", "0"], "--top-k: must be an integer >= 1"),
    (["--top-p", "2"], "--top-p: must be a number in (0, 1]"),
    (["--top-p", "0"], "--top-p: must be a number in (0, 1]"),
    (["--temperature", "-1"], "--temperature: must be a number >= 0"),
    (["--num-samples", "0"], "--num-samples: must be an integer >= 1"),
])
def test_bad_generate_numbers_are_refused_at_parse_time(capsys, files, extra, message):
    with pytest.raises(SystemExit) as exit_:
        main(["generate", str(files["ckpt"]), *extra])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.parametrize("command, extra, message", [
    ("embed", ["--batch-size", "0"], "--batch-size: must be an integer >= 1"),
    ("embed", ["--chunk-tokens", "1"], "--chunk-tokens: must be an integer >= 2"),
    ("score", ["--window", "0"], "--window: must be an integer >= 2"),
    ("fitness", ["--replicates", "0"], "--replicates: must be an integer >= 1"),
    ("fitness", ["--identity", "0"], "--identity: must be a number in (0, 1]"),
    ("finetune", ["--epochs", "0"], "--epochs: must be an integer >= 1"),
    ("finetune", ["--warmup-fraction", "2"], "--warmup-fraction: must be a number in [0, 1]"),
    ("demo", ["--steps", "-4"], "--steps: must be an integer >= 1"),
])
def test_bad_numbers_of_other_commands_are_refused(capsys, files, command, extra, message):
    base = {"embed": ["embed", "ckpt", "--fasta", "x.fa", "--out", "o.npy"],
            "score": ["score", "ckpt", "--fasta", "x.fa"],
            "fitness": ["fitness", "ckpt", "--dms", "d.csv", "--out", "o.csv"],
            "finetune": ["finetune", "--preset", "tiny-mlstm", "--train", "t.csv", "--out", "o"],
            "demo": ["demo"]}[command]
    with pytest.raises(SystemExit) as exit_:
        main([*base, *extra])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_unusable_run_directories_are_refused_in_one_line(tmp_path, capsys, files):
    args = [*PRETRAIN, "--fasta", str(files["fasta"]), "--seq-len", "4"]
    for run_dir, reason in ((files["file"], "is a file"), (files["file"] / "sub", "Not a directory"),
                            (_read_only_dir(tmp_path) / "run", ""),
                            (_read_only_dir(tmp_path), "")):
        assert main([*args, "--run-dir", str(run_dir)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("bioxlstm: error:") and reason in err


def test_resume_of_a_directory_that_is_not_a_run_is_refused(tmp_path, capsys, files):
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.tex").write_text("x")
    assert main([*PRETRAIN, "--fasta", str(files["fasta"]), "--seq-len", "4", "--run-dir", str(other),
                 "--resume"]) == 2
    assert "not a bioxlstm run directory" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["score", "embed"])
def test_unwritable_outputs_fail_before_any_compute(monkeypatch, capsys, files, command):
    from bioxlstm.tasks import embed, score

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the output path was checked")

    monkeypatch.setattr(score, "_causal_model", no_model)
    monkeypatch.setattr(embed, "load_model", no_model)
    out = files["file"] / "out.tsv" if command == "score" else files["file"] / "out.npy"
    assert main([command, str(files["ckpt"]), "--fasta", str(files["fasta"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(files["file"]) in err


def test_generate_writes_fasta_to_out_and_refuses_options_that_do_not_apply(tmp_path, capsys, files):
    out = tmp_path / "gen.fa"
    assert main(["generate", str(files["ckpt"]), "--prompt", "ACG", "--num", "2", "--length", "5",
                 "--device", "cpu", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == ">generated_1" and lines[1].startswith("ACG") and len(lines) == 4
    for extra in (["--context-smiles", "x.smi"], ["--max-residues", "4"], ["--batch-size", "4"]):
        assert main(["generate", str(files["ckpt"]), *extra]) == 2
        assert f"{extra[0]} does not apply" in capsys.readouterr().err
