"""The throughput benchmark runs end to end on a tiny case and reports over-budget cases."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"


def run(tmp_path: Path, seq_lens: str, *extra: str, models: str = "transformer:tiny-mlstm") -> dict:
    out = tmp_path / "out.json"
    subprocess.run([sys.executable, str(SCRIPT), "--models", models,
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


def test_bf16_mixed_precision_runs_and_is_recorded(tmp_path: Path) -> None:
    report = run(tmp_path, "64", "--bf16", models="tiny-mlstm,transformer:tiny-mlstm")
    assert report["settings"]["bf16"] is True
    assert [row["bf16"] for row in report["results"]] == [True, True]
    assert all(row[phase]["status"] == "ok" for row in report["results"]
               for phase in ("fwd", "train"))


def test_bf16_with_bfloat16_weights_is_refused() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--bf16", "--dtype", "bfloat16"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--bf16 keeps float32 weights" in proc.stderr


def test_over_budget_case_is_skipped_not_a_crash(tmp_path: Path) -> None:
    report = run(tmp_path, "32,64", "--max-seconds", "0.000001")
    first, second = report["results"]
    assert first["fwd"]["status"] == first["train"]["status"] == "skipped"
    assert "max-seconds" in first["fwd"]["reason"]
    assert "already skipped" in second["fwd"]["reason"]


def test_reference_model_without_xlstm_is_skipped_with_reason(tmp_path: Path) -> None:
    # An `xlstm` module that fails to import hides the library even where it is installed.
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "xlstm.py").write_text("raise ImportError('hidden for this test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(hide), *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--models", "reference:tiny-mlstm",
                           "--seq-lens", "32,64", "--batch-tokens", "128", "--repeats", "1",
                           "--device", "cpu", "--json", str(out)],
                          check=True, capture_output=True, text=True, timeout=120, env=env)
    rows = json.loads(out.read_text())["results"]
    assert [r["seq_len"] for r in rows] == [32, 64]
    for row in rows:
        assert row["kind"] == "reference"
        for phase in ("fwd", "train"):
            assert row[phase]["status"] == "skipped"
            assert "xlstm library not installed" in row[phase]["reason"]
            assert ".[reference]" in row[phase]["reason"]
    assert "reference:tiny-mlstm: skipped: reference xlstm library not installed" in proc.stderr


def test_reference_adapter_matches_our_parameter_count() -> None:
    pytest.importorskip("xlstm")
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from bench_utils import count, xlstm_model
        from reference_xlstm import reference_params
    finally:
        sys.path.remove(str(SCRIPT.parent))
    ours = count(xlstm_model("dna-xlstm-4m", 16))
    assert abs(reference_params("dna-xlstm-4m") - ours) <= 0.05 * ours


@pytest.mark.parametrize("installed", [True, False])
def test_default_models_add_the_reference_only_when_installed(installed: bool, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import bench_utils
    import reference_xlstm

    monkeypatch.setattr(reference_xlstm, "missing", lambda: "" if installed else "not installed")
    models = bench_utils.default_models()
    assert models[:4] == list(bench_utils.DEFAULT_MODELS)
    assert models[4:] == (["reference:dna-xlstm-500k", "reference:dna-xlstm-4m"] if installed else [])


def test_table_warns_about_a_case_whose_calls_differ_widely(monkeypatch, capsys) -> None:
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import throughput

    def row(model: str, seconds: list[float]) -> dict:
        ok = {"status": "ok", "tokens_per_s": 1.0, "peak_mib": 1.0}
        return {"model": model, "params": 1, "seq_len": 64, "batch": 1, "fwd": ok,
                "train": {**ok, "seconds": seconds}}

    throughput.print_table([row("steady", [1.0, 1.2, 1.1]), row("stalled", [8.0, 21.6, 19.7])])
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert notes == ["  stalled S=64 train: timed calls ranged 8.00-21.60 s (2.7x): the machine's "
                     "speed changed during the case; rerun it, or compare models with paired.py"]


def test_kernels_are_built_first_only_when_a_model_will_run(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import bench_utils

    from bioxlstm.layers import cpu_kernels

    calls = []
    monkeypatch.setattr(cpu_kernels, "build_cpu_kernels", lambda: calls.append(1) or {})
    spec = bench_utils.ModelSpec(name="m", kind="xlstm", config={}, params=1)
    bench_utils.build_kernels_first("cpu", [bench_utils.ModelSpec(**{**vars(spec), "skip": "no"})])
    bench_utils.build_kernels_first("cuda", [spec])
    assert calls == []
    bench_utils.build_kernels_first("cpu", [spec])
    assert calls == [1]
