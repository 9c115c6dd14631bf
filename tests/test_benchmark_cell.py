"""The cell benchmark times the fused kernel, and the PyTorch form beside it, and counts FLOPs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_fast_path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "cell.py"


def test_product_flops_count_the_split_causal_products(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from cell import product_flops

    # one chunk of 64, heads of 128: each causal product covers 32 x 32 + 32 x 64 = 3,072 entries;
    # forward: Q K^T and S V (3,072 x 128 each) and Q C, K^T V (64 x 128 x 128 each)
    assert product_flops(64, 64, 128, 128) == (2 * (2 * 3072 * 128 + 2 * 64 * 128 * 128),
                                               2 * (4 * 3072 * 128 + 4 * 64 * 128 * 128))
    # a tail chunk of one token: its causal products are 1 x 1
    fwd, bwd = product_flops(65, 64, 128, 128)
    assert (fwd, bwd) == (2 * (2 * 3072 * 128 + 2 * 64 * 128 * 128 + 2 * 128 + 2 * 128 * 128),
                          2 * (4 * 3072 * 128 + 4 * 64 * 128 * 128 + 4 * 128 + 4 * 128 * 128))


@needs_fast_path("mLSTM chunkwise")
def test_cell_benchmark_times_both_forms_and_they_agree(tmp_path: Path) -> None:
    out = tmp_path / "cell.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--batch", "1", "--heads", "2",
                           "--seq-len", "40", "--head-dim", "8", "--chunk", "16", "--rounds", "2",
                           "--warmup", "0", "--torch", "--json", str(out)],
                          check=True, capture_output=True, text=True, timeout=300)
    assert "largest |fused - torch| / largest |torch|" in proc.stdout
    report = json.loads(out.read_text())
    assert [row["form"] for row in report["results"]] == ["fused", "torch"]
    for row in report["results"]:
        assert len(row["forward_calls_ms"]) == 2 and row["forward_ms"] > 0
        assert row["backward_ms"] > 0 and row["backward_gflops"] > 0
    differences, scales = report["max_abs_difference"], report["max_abs_torch"]
    assert set(differences) == set(scales) == {"h", "dq", "dk", "dv", "di", "df"}
    assert all(differences[n] <= 1e-4 * scales[n] for n in differences)


def test_cell_benchmark_rejects_bad_options() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--chunk", "0"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "--chunk" in proc.stderr
