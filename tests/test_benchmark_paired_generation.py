"""The paired generation benchmark alternates models' generation rounds in one process."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "paired_generation.py"


def test_paired_generation_reports_ms_per_token_and_ratios(tmp_path: Path) -> None:
    out = tmp_path / "paired_generation.json"
    subprocess.run([sys.executable, str(SCRIPT), "--models", "tiny-mlstm,transformer:tiny-mlstm",
                    "--context", "24", "--batch", "2", "--rounds", "3", "--tokens-per-round", "2",
                    "--warmup", "1", "--threads", "1", "--json", str(out)],
                   check=True, capture_output=True, timeout=120)
    report = json.loads(out.read_text())
    assert report["machine"]["torch"] and report["settings"]["context"] == 24
    first, second = report["results"]
    assert [first["model"], second["model"]] == ["tiny-mlstm", "transformer:tiny-mlstm"]
    assert first["first_times_faster"] == 1.0
    for row in (first, second):
        assert len(row["rounds_ms_per_token"]) == 3
        assert row["ms_per_token"] == statistics.median(row["rounds_ms_per_token"]) > 0
    ratios = [b / a for a, b in zip(first["rounds_ms_per_token"], second["rounds_ms_per_token"])]
    assert abs(second["first_times_faster"] - statistics.median(ratios)) < 1e-12


def test_paired_generation_rejects_bad_options() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tokens-per-round", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--tokens-per-round" in proc.stderr


def test_paired_generation_refuses_models_it_cannot_run() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--models", "tiny-mlstm,reference:tiny-mlstm"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "reference:tiny-mlstm:" in proc.stderr
