"""The generation benchmark and the plotting script run end to end on tiny settings."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
GENERATION_KEYS = {"prefill_s", "ms_per_token", "ms_per_token_median", "state_mib",
                   "state_held_mib", "state_mib_end", "prefill_peak_mib", "decode_peak_mib"}


@pytest.fixture(scope="module")
def generation_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generation") / "generation.json"
    subprocess.run([sys.executable, str(BENCHMARKS / "generation.py"), "--quick",
                    "--models", "tiny-mlstm,transformer:tiny-mlstm", "--contexts", "16,48",
                    "--new-tokens", "3", "--score-lengths", "64,256", "--chunk-tokens", "32",
                    "--device", "cpu", "--threads", "1", "--json", str(out)],
                   check=True, capture_output=True, timeout=120)
    return out


def test_generation_reports_time_and_state_memory(generation_json: Path) -> None:
    report = json.loads(generation_json.read_text())
    assert report["machine"]["torch"] and report["settings"]["new_tokens"] == 3
    rows = {(r["kind"], r["context"]): r for r in report["generation"]}
    assert set(rows) == {(kind, c) for kind in ("xlstm", "transformer") for c in (16, 48)}
    for row in rows.values():
        assert row["status"] == "ok" and GENERATION_KEYS <= set(row)
        assert row["ms_per_token"] > 0 and len(row["step_ms"]) == 3
    assert rows["xlstm", 16]["state_mib"] == rows["xlstm", 48]["state_mib"]
    kv = rows["transformer", 48]["state_mib"] / rows["transformer", 16]["state_mib"]
    assert kv == pytest.approx(3.0)
    scoring = report["scoring"]
    assert [(r["length"], r["status"]) for r in scoring] == [(64, "ok"), (256, "ok")]
    assert all(r["peak_mib"] >= 0 and r["tokens_per_s"] > 0 for r in scoring)


def test_plot_writes_pngs(generation_json: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    ok = {"status": "ok", "tokens_per_s": 100.0, "peak_mib": 10.0}
    rows = [{"model": model, "kind": kind, "seq_len": s, "fwd": ok,
             "train": ok if s < 64 else {"status": "skipped", "reason": "test"}}
            for model, kind in (("a", "xlstm"), ("b", "transformer"), ("ref", "reference"))
            for s in (32, 64)]
    throughput = tmp_path / "throughput.json"
    throughput.write_text(json.dumps({"machine": {"cpu": "test"}, "results": rows}))
    out = tmp_path / "img"
    subprocess.run([sys.executable, str(BENCHMARKS / "plot.py"), "--throughput", str(throughput),
                    "--generation", str(generation_json), "--out", str(out)],
                   check=True, capture_output=True, timeout=60)
    for name in ("throughput.png", "memory.png", "generation.png"):
        assert (out / name).stat().st_size > 0
