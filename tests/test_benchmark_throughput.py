"""The throughput benchmark runs end to end on a tiny case and reports over-budget cases."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"


def run(tmp_path: Path, seq_lens: str, *extra: str) -> dict:
    out = tmp_path / "out.json"
    subprocess.run([sys.executable, str(SCRIPT), "--models", "transformer:tiny-mlstm",
                    "--seq-lens", seq_lens, "--batch-tokens", "128", "--repeats", "1",
                    "--device", "cpu", "--json", str(out), *extra],
                   check=True, capture_output=True, timeout=120)
    return json.loads(out.read_text())


def test_throughput_reports_speed_and_memory(tmp_path: Path) -> None:
    report = run(tmp_path, "64")
    assert report["machine"]["torch"] and report["machine"]["cpu_count"]
    assert [r["seq_len"] for r in report["results"]] == [64]
    for row in report["results"]:
        assert row["batch"] == 128 // row["seq_len"]
        for phase in ("fwd", "train"):
            assert row[phase]["status"] == "ok"
            assert row[phase]["tokens_per_s"] > 0 and row[phase]["peak_mib"] >= 0


def test_over_budget_case_is_skipped_not_a_crash(tmp_path: Path) -> None:
    report = run(tmp_path, "32,64", "--max-seconds", "0.000001")
    first, second = report["results"]
    assert first["fwd"]["status"] == first["train"]["status"] == "skipped"
    assert "max-seconds" in first["fwd"]["reason"]
    assert "already skipped" in second["fwd"]["reason"]
