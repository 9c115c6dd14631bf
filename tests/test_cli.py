"""The command line: presets table, train -> generate round trip, one-line errors."""

import pytest
import torch

from bioxlstm import XLSTMLanguageModel, datasets, preset
from bioxlstm.cli import main


def test_presets_lists_every_preset_with_its_count(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "dna-xlstm-4m" in out and "3,747,912" in out and "prot-xlstm-102m" in out


def test_help_explains_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    assert "--resume" in capsys.readouterr().out


def test_train_then_generate(tmp_path, capsys):
    fasta = tmp_path / "toy.fa"
    torch.manual_seed(0)
    seq = "".join("ACGT"[j] for j in torch.randint(0, 4, (3000,)))
    fasta.write_text(f">toy\n{seq}\n")
    model_yaml = tmp_path / "model.yaml"
    model_yaml.write_text("preset: tiny-mlstm\n")
    run = tmp_path / "run"
    args = ["train", "--model-config", str(model_yaml), "--fasta", str(fasta), "--run-dir", str(run),
            "--steps", "3", "--batch-size", "2", "--seq-len", "64", "--device", "cpu"]
    assert main(args) == 0
    assert (run / "checkpoint" / "model.safetensors").is_file() and (run / "metrics.jsonl").is_file()
    assert main(["generate", str(run / "checkpoint"), "--prompt", "ACG", "--num", "2",
                 "--length", "10", "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[-4:]
    assert lines[0] == ">generated_1" and lines[1].startswith("ACG") and len(lines[1]) <= 13
    assert set(lines[1]) <= set("ACGTN")


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bioxlstm: error:") and err.count("\n") == 1
    fasta = tmp_path / "bad.fa"
    fasta.write_text(">r1\nACGTXACGT\n")
    ckpt = tmp_path / "ckpt"
    XLSTMLanguageModel(preset("tiny-mlstm")).save_pretrained(ckpt)
    assert main(["train", "--preset", "tiny-mlstm", "--fasta", str(fasta), "--run-dir",
                 str(tmp_path / "r"), "--steps", "1"]) == 2
    assert "position 5" in capsys.readouterr().err


GENOME = str(datasets.path("human_demo_genome"))
INTERVALS = str(datasets.path("human_demo_intervals"))


def test_pretrain_on_a_genome_with_mlm_and_resume(tmp_path):
    import json

    run = tmp_path / "run"
    args = ["pretrain", "--preset", "tiny-mlstm", "--bidirectional", "--genome", GENOME,
            "--intervals", INTERVALS, "--objective", "mlm", "--rc-aug", "0.5", "--run-dir", str(run),
            "--steps", "2", "--batch-size", "2", "--seq-len", "64", "--device", "cpu"]
    assert main(args) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["model_config"]["bidirectional"] is True
    assert info["data"]["window"] == {**info["data"]["window"], "objective": "mlm", "rc_prob": 0.5}
    assert info["data"]["genome"].endswith("human_demo_genome.fa.bgz")
    assert main([*args[:-6], "--steps", "3", "--batch-size", "2", "--seq-len", "64", "--resume"]) == 0
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 3


@pytest.mark.parametrize("extra, message", [
    (["--genome", GENOME, "--intervals", INTERVALS, "--rc-equivariant"], "objective 'mlm'"),
    (["--genome", GENOME], "name the validation chromosomes"),
    (["--genome", GENOME, "--valid-chroms", "chrZ"], "'chrZ' is not in the genome"),
    (["--fasta", GENOME, "--objective", "mlm"], "need --genome"),
])
def test_pretrain_user_errors_are_one_line(tmp_path, capsys, extra, message):
    args = ["pretrain", "--preset", "tiny-mlstm", *extra, "--run-dir", str(tmp_path / "r"),
            "--steps", "1", "--batch-size", "2", "--seq-len", "32"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_plot_draws_a_runs_curves(tmp_path, capsys):
    import json

    run = tmp_path / "run"
    run.mkdir()
    records = [{"step": 10, "loss": 1.3, "lr": 1e-3}, {"step": 20, "loss": 1.2, "lr": 5e-4,
                                                       "valid_loss": 1.25, "valid_ppl": 3.49},
               {"step": 20, "skipped": "non-finite"}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["plot", str(run)]) == 0
    png = run / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(png) in capsys.readouterr().out
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    assert "no such file" in capsys.readouterr().err
    (run / "metrics.jsonl").write_text("{not json\n")
    assert main(["plot", str(run)]) == 2
    assert "line 1: not JSON" in capsys.readouterr().err
