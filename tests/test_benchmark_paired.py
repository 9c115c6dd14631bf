"""The paired benchmark alternates models in one process and reports speeds and ratios."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "paired.py"


def test_paired_reports_speeds_and_ratios(tmp_path: Path) -> None:
    out = tmp_path / "paired.json"
    subprocess.run([sys.executable, str(SCRIPT), "--models", "tiny-mlstm,transformer:tiny-mlstm",
                    "--seq-len", "32", "--batch-tokens", "64", "--rounds", "3", "--warmup", "1",
                    "--json", str(out)], check=True, capture_output=True, timeout=120)
    report = json.loads(out.read_text())
    assert report["batch"] == 2 and report["machine"]["torch"]
    assert report["machine"]["dense_float32"] in ("onednn", "blas")
    assert set(report["machine"]["cpu_features"]) <= {"avx2", "fma", "avx512f", "avx512_bf16",
                                                      "amx_bf16", "amx_tile"}
    first, second = report["results"]
    assert [first["model"], second["model"]] == ["tiny-mlstm", "transformer:tiny-mlstm"]
    assert first["ratio_to_first"] == 1.0
    for row in (first, second):
        assert len(row["calls_tokens_per_s"]) == 3 and row["tokens_per_s"] > 0
    calls = [a / b for a, b in zip(second["calls_tokens_per_s"], first["calls_tokens_per_s"])]
    assert abs(second["ratio_to_first"] - sorted(calls)[1]) < 1e-9


def test_paired_rejects_bad_options() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--rounds", "0"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "--rounds" in proc.stderr


def test_paired_roofline_share_follows_each_rounds_peak(tmp_path: Path) -> None:
    out = tmp_path / "paired.json"
    subprocess.run([sys.executable, str(SCRIPT), "--models", "tiny-mlstm", "--seq-len", "32",
                    "--batch-tokens", "64", "--rounds", "3", "--warmup", "1", "--roofline",
                    "--json", str(out)], check=True, capture_output=True, timeout=120)
    report = json.loads(out.read_text())
    peaks = report["matmul_peak_gflops_per_round"]
    (row,) = report["results"]
    assert len(peaks) == 3 and min(peaks) > 0
    shares = sorted(tps * 6 * row["params"] / (peak * 1e9)
                    for tps, peak in zip(row["calls_tokens_per_s"], peaks))
    assert row["params"] > 0 and abs(row["roofline_share"] - shares[1]) < 1e-12
