"""`bioxlstm benchmark`: suite layouts, the table on the bundled suite, and resuming a stopped run
without redoing finished cells."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from bioxlstm import XLSTMLanguageModel, datasets, preset
from bioxlstm.cli import main
from bioxlstm.errors import ConfigError
from bioxlstm.tasks import benchmark
from bioxlstm.tasks.benchmark import BenchmarkConfig, run_benchmark
from bioxlstm.tasks.finetune import FinetuneConfig
from bioxlstm.tasks.suite import SuiteError, as_tables, find_tasks

QUICK = FinetuneConfig(epochs=1, batch_size=32, progress=False, device="cpu")


def toy_suite(root, tasks=("gc", "at"), n=40, seed=0):
    """Tasks whose class-1 sequences are GC-rich (or AT-rich), as train.csv / test.csv."""
    rng = np.random.default_rng(seed)
    for name in tasks:
        for part, rows in (("train", n), ("test", n // 2)):
            lines = ["sequence,label"]
            for j in range(rows):
                rich = [0.1, 0.4, 0.4, 0.1] if (j % 2) == (name == "gc") else [0.4, 0.1, 0.1, 0.4]
                lines.append("".join(rng.choice(list("ACGT"), size=24, p=rich)) + f",{j % 2}")
            (root / name).mkdir(parents=True, exist_ok=True)
            (root / name / f"{part}.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def dna_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    XLSTMLanguageModel(preset("tiny-mlstm")).save_pretrained(path)
    return path


def test_bundled_suite_runs_into_one_table_with_every_method(tmp_path, dna_checkpoint):
    suite = datasets.path("dna_promoter_suite")
    assert [t.name for t in find_tasks(suite)] == ["human_nontata_promoters", "promoter_core"]
    config = BenchmarkConfig(seeds=2, finetune=QUICK)
    result = run_benchmark(suite, tmp_path / "out", config, checkpoint=dna_checkpoint, scratch=True)
    assert result.ran == 12 and result.skipped == 0
    lines = result.table.splitlines()
    assert lines[0] == "| task | metric | xLSTM pretrained (full) | xLSTM from scratch | 4-mer linear |"
    assert lines[2].startswith("| human_nontata_promoters | accuracy | ") and " ± " in lines[2]
    assert lines[4].startswith("| mean over tasks | accuracy |") and "best on" in lines[6]
    with open(tmp_path / "out" / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    accuracy = [r for r in rows if r["metric"] == "accuracy"]
    assert len(accuracy) == 6 and all(r["n"] == "2" for r in accuracy)
    baseline = [r for r in accuracy if r["method"] == "baseline"]
    assert all(float(r["mean"]) > 0.6 for r in baseline)  # 4-mers do tell promoters apart
    assert (tmp_path / "out" / "results.png").stat().st_size > 1000
    assert not (tmp_path / "out" / "runs" / "promoter_core" / "xlstm-seed0" / "classifier").exists()
    settings = json.loads((tmp_path / "out" / "benchmark.json").read_text())
    assert settings["settings"]["finetune"]["epochs"] == 1 and "torch" in settings["versions"]


def test_a_stopped_run_resumes_without_redoing_finished_cells(tmp_path, monkeypatch, dna_checkpoint):
    suite = toy_suite(tmp_path / "suite")
    config = BenchmarkConfig(seeds=2, finetune=QUICK, plot=False)
    real, calls = benchmark.run_cell, []

    def stop_after_five(task, seed, method, out_dir, *args):
        if len(calls) == 5:  # the sixth cell starts writing, then the run is killed
            (out_dir / "runs" / task.name / f"{method.key}-seed{seed}").mkdir(parents=True)
            raise KeyboardInterrupt
        calls.append((task.name, seed, method.key))
        return real(task, seed, method, out_dir, *args)

    monkeypatch.setattr(benchmark, "run_cell", stop_after_five)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(suite, tmp_path / "out", config, checkpoint=dna_checkpoint, preset_name="tiny-mlstm")
    finished = sorted((tmp_path / "out" / "cells").rglob("*.json"))
    assert len(finished) == 5
    before = {p: p.read_text() for p in finished}

    first = list(calls)
    monkeypatch.setattr(benchmark, "run_cell", lambda *a: calls.append(a[:3]) or real(*a))
    result = run_benchmark(suite, tmp_path / "out", config, checkpoint=dna_checkpoint,
                           preset_name="tiny-mlstm")
    redone = [(t.name, s, m.key) for t, s, m in calls[len(first):]]
    assert result.skipped == 5 and result.ran == 7 and len(redone) == 7
    assert not set(redone) & set(first)
    assert all(p.read_text() == text for p, text in before.items())  # finished cells untouched
    assert len(list((tmp_path / "out" / "cells").rglob("*.json"))) == 12
    again = run_benchmark(suite, tmp_path / "out", config, checkpoint=dna_checkpoint,
                          preset_name="tiny-mlstm")
    assert again.ran == 0 and again.skipped == 12 and again.table == result.table


def test_a_rerun_with_other_settings_is_refused(tmp_path, dna_checkpoint):
    suite = toy_suite(tmp_path / "suite", tasks=("gc",))
    run_benchmark(suite, tmp_path / "out", BenchmarkConfig(seeds=1, finetune=QUICK, plot=False),
                  checkpoint=dna_checkpoint)
    other = BenchmarkConfig(seeds=1, plot=False,
                            finetune=FinetuneConfig(epochs=2, progress=False, device="cpu", batch_size=32))
    with pytest.raises(ConfigError, match=r"other settings \(finetune.epochs\)"):
        run_benchmark(suite, tmp_path / "out", other, checkpoint=dna_checkpoint)
    more = run_benchmark(suite, tmp_path / "out", BenchmarkConfig(seeds=2, finetune=QUICK, plot=False),
                         checkpoint=dna_checkpoint)
    assert more.skipped == 2 and more.ran == 2  # more seeds reuse the finished ones


def test_genomic_benchmarks_class_folders_are_gathered_into_tables(tmp_path):
    for part, rows in (("train", {"positive": ["ACGT", "GGCC"], "negative": ["TTTT"]}),
                       ("test", {"positive": ["ACGA"], "negative": ["TTTA\n"]})):
        for cls, seqs in rows.items():
            (tmp_path / "suite" / "enhancers" / part / cls).mkdir(parents=True)
            for j, seq in enumerate(seqs):
                (tmp_path / "suite" / "enhancers" / part / cls / f"{j}.txt").write_text(seq)
    (task,) = find_tasks(tmp_path / "suite")
    assert task.layout == "genomic-benchmarks"
    tables = as_tables(task, tmp_path / "data")
    assert tables.test.read_text() == \
        "id,sequence,label\nnegative/0,TTTA,negative\npositive/0,ACGA,positive\n"
    assert tables.train.read_text().count("\n") == 4


def test_nucleotide_transformer_fna_tasks_are_found(tmp_path):
    for part in ("train", "test"):
        (tmp_path / "nt" / "promoter_all").mkdir(parents=True, exist_ok=True)
        (tmp_path / "nt" / "promoter_all" / f"{part}.fna").write_text(">s|1\nACGT\n>t|0\nTTTT\n")
    (task,) = find_tasks(tmp_path / "nt")
    assert task.name == "promoter_all" and task.layout == "table"
    assert task.train.name == "train.fna" and task.test.name == "test.fna"


def test_suite_errors_name_the_folder(tmp_path):
    (tmp_path / "s" / "t").mkdir(parents=True)
    (tmp_path / "s" / "t" / "train.csv").write_text("sequence,label\nAC,1\n")
    with pytest.raises(SuiteError, match=r"/t: no test data"):
        find_tasks(tmp_path / "s")
    with pytest.raises(SuiteError, match=r"no task 'x'"):
        find_tasks(tmp_path / "s", ["x"])
    with pytest.raises(SuiteError, match="no such suite directory"):
        find_tasks(tmp_path / "none")


@pytest.mark.parametrize("argv, message", [
    ([], "needs a --checkpoint"),
    (["--preset", "tiny-mlstm", "--scratch"], "not allowed with argument"),
    (["--preset", "tiny-mlstm", "--metric", "spearman"],
     "--metric spearman is not reported for classification"),
    (["--preset", "tiny-mlstm", "--lora-rank", "4"], "--lora-rank applies to --adapt lora only"),
    (["--preset", "tiny-mlstm", "--tasks", "nope"], "no task 'nope'"),
])
def test_cli_benchmark_refusals_are_one_line(tmp_path, capsys, argv, message):
    suite = toy_suite(tmp_path / "suite", tasks=("gc",))
    try:
        code = main(["benchmark", str(suite), "--out", str(tmp_path / "o"), "--no-plot", *argv])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_cli_benchmark_prints_the_table(tmp_path, capsys, dna_checkpoint):
    suite = toy_suite(tmp_path / "suite", tasks=("gc",))
    assert main(["benchmark", str(suite), "--checkpoint", str(dna_checkpoint), "--out", str(tmp_path / "o"),
                 "--seeds", "1", "--epochs", "1", "--baseline", "none", "--no-plot", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "| gc | accuracy |" in captured.out and "1 cells run, 0 found finished" in captured.out
    assert "[1/1] gc, seed 0, xLSTM pretrained (full): accuracy" in captured.err


def test_a_killed_process_resumes_from_its_finished_cells(tmp_path, dna_checkpoint):
    """SIGKILL a real `bioxlstm benchmark` once two cells are on disk; the rerun keeps them."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    suite = toy_suite(tmp_path / "suite", n=80)
    argv = ["benchmark", str(suite), "--checkpoint", str(dna_checkpoint), "--out", str(tmp_path / "o"),
            "--seeds", "3", "--epochs", "3", "--batch-size", "8", "--no-plot", "--device", "cpu"]
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen([sys.executable, "-m", "bioxlstm", *argv], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cells = tmp_path / "o" / "cells"
    deadline = time.monotonic() + 300
    while len(list(cells.rglob("*.json"))) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = {p: p.read_text() for p in cells.rglob("*.json")}
    assert 2 <= len(finished) < 12, "the run was not stopped midway"
    main(argv)
    assert len(list(cells.rglob("*.json"))) == 12
    assert all(p.read_text() == text for p, text in finished.items())
    assert not list((tmp_path / "o" / "runs").glob(".trash-*"))
