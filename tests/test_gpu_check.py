"""benchmarks/gpu_check.sh keeps working before a GPU is lent: its dry run on the CPU, the part
runner (time limits, failures recorded, the run going on, the exit status), the wheelhouse check
against the GPU machine's packages, and the summary's verdicts on the issue's targets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_check

    return gpu_check


def _env() -> dict[str, str]:
    paths = [str(SRC), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def test_dry_run_of_the_benchmark_parts_writes_results_and_tables(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_check.sh"), "--dry-run", "--parts",
         "env,throughput-64,generation-64,cell-bf16", "--work", str(tmp_path / "work")],
        env={**_env(), "OUT": str(out), "PYTHON": sys.executable}, capture_output=True, text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "dry-run"
    assert [(p["name"], p["status"]) for p in results["parts"]] == [
        ("env", "ok"), ("throughput-64", "ok"), ("generation-64", "ok"), ("cell-bf16", "ok")]
    assert results["data"]["env"]["cuda_available"] is False
    throughput = results["data"]["throughput-64"]
    assert throughput["machine"]["device"] == "cpu" and throughput["settings"]["bf16"]
    assert [r["model"] for r in throughput["results"]] == [
        "transformer:tiny-mlstm", "tiny-mlstm", "transformer:tiny-prot-xlstm", "tiny-prot-xlstm"]
    assert all(r["status"] == "ok" and len(r["calls_tokens_per_s"]) == 2
               for r in throughput["results"])
    generation = results["data"]["generation-64"]["results"]
    assert all(r["prefill_s"] > 0 and len(r["rounds_ms_per_token"]) == 3 for r in generation)
    assert results["data"]["cell-bf16"]["results"][0]["form"] == "bioxlstm"
    summary = (out / "summary.md").read_text()
    for heading in ("Training (forward + backward", "Generation (batch 1", "mLSTM cell alone"):
        assert heading in summary
    assert "| tiny-prot-xlstm | 64 | 2 |" in summary and "MISSED" not in summary
    log = (out / "gpu_check.log").read_text()
    assert "DRY RUN on the CPU" in log and "4/4 parts ok" in log


def test_a_failed_or_slow_part_is_recorded_and_the_run_goes_on(gpu_check, tmp_path, monkeypatch):
    py = sys.executable
    writes = "import json, sys; json.dump({'x': 1}, open(sys.argv[1], 'w'))"
    plan = [gpu_check.Part("slow", 2, [py, "-c", "import time; time.sleep(60)"]),
            gpu_check.Part("broken", 30, [py, "-c", "raise SystemExit(3)"]),
            gpu_check.Part("silent", 30, [py, "-c", "pass"], result="silent.json"),
            gpu_check.Part("fine", 30, [py, "-c", writes, str(tmp_path / "fine.json")],
                           result="fine.json"),
            gpu_check.Part("late", 30, [py, "-c", "pass"])]
    monkeypatch.setattr(gpu_check, "parts", lambda dry, work, out: plan)
    code = gpu_check.main(["run", "--dry-run", "--out", str(tmp_path), "--work", str(tmp_path),
                           "--budget", "40", "--skip", "late"])
    results = json.loads((tmp_path / "results.json").read_text())
    status = {p["name"]: (p["status"], p.get("reason", "")) for p in results["parts"]}
    assert code == 1
    assert status["slow"] == ("timeout", "killed after 2 s")
    assert status["broken"] == ("failed", "exit status 3")
    assert status["silent"] == ("failed", "silent.json was not written")
    assert status["fine"] == ("ok", "") and results["data"]["fine"] == {"x": 1}
    assert "late" not in status
    with pytest.raises(SystemExit):
        gpu_check.main(["run", "--parts", "nonesuch"])


def _wheel(folder: Path, filename: str, requires: tuple[str, ...] = ()) -> None:
    name, version = filename.split("-")[:2]
    with zipfile.ZipFile(folder / filename, "w") as z:
        z.writestr(f"{name}-{version}.dist-info/METADATA", "Metadata-Version: 2.1\nName: "
                   f"{name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires))


def test_wheelhouse_check_against_the_gpu_machines_packages(gpu_check, tmp_path):
    _wheel(tmp_path, "setuptools-84.2.1-py3-none-any.whl")
    report: dict = {}
    assert not gpu_check.check_wheelhouse(tmp_path, report)  # mlstm_kernels is not there
    assert any(p.startswith("mlstm_kernels>=2.0.6") for p in report["problems"])
    _wheel(tmp_path, "mlstm_kernels-2.0.6-py3-none-any.whl", ("einops", "torch", "numpy"))
    assert gpu_check.check_wheelhouse(tmp_path, report), report["problems"]
    met = {row["requirement"].split(";")[0]: row["met_by"] for row in report["requirements"]}
    assert met["torch>=2.3"] == "there (2.11.0)" and met["einops"].startswith("there")
    assert met["mlstm_kernels>=2.0.6"].startswith("carried: mlstm_kernels-2.0.6")
    assert met["setuptools>=64"].startswith("carried")  # the isolated build sees only the wheels
    _wheel(tmp_path, "torch-2.11.0-cp312-cp312-manylinux_2_28_x86_64.whl")
    _wheel(tmp_path, "tqdm-4.70.1-cp311-cp311-manylinux_2_28_x86_64.whl", ("nonesuch-a",))
    _wheel(tmp_path, "extra_thing-1.0-py3-none-any.whl", ("nonesuch-b",))
    assert not gpu_check.check_wheelhouse(tmp_path, report)
    problems = " ".join(report["problems"])
    assert "never carry torch" in problems and "tqdm-4.70.1-cp311" in problems
    # a carried package the machine lacks must have its needs met; a fallback's only warn
    assert "nonesuch-b" in problems and "nonesuch-a" not in problems
    assert any("nonesuch-a" in w for w in report["warnings"])


def test_summary_gives_the_targets_verdicts(gpu_check):
    def paired(S, x_calls, t_calls, name="dna-xlstm-4m"):
        return dict(settings=dict(seq_len=S), batch=32768 // S, results=[
            dict(model=f"transformer:{name}", tokens_per_s=t_calls[0], peak_mib=10.0,
                 calls_tokens_per_s=t_calls),
            dict(model=name, tokens_per_s=x_calls[0], peak_mib=5.0, roofline_share=0.2,
                 calls_tokens_per_s=x_calls)])

    results = dict(mode="gpu", budget_s=480, elapsed_s=400, parts=[], data={
        "env": dict(gpu="NVIDIA H100 80GB HBM3", driver="580.159.04", torch="2.11.0+cu130"),
        "throughput-4096": paired(4096, [100, 120, 110], [100, 100, 100]),
        "throughput-32768": paired(32768, [200, 250, 300], [100, 100, 100]),
        "generation-32768": dict(settings=dict(context=32768), results=[
            dict(model="dna-xlstm-4m", ms_per_token=1.0, rounds_ms_per_token=[1.0, 1.0, 1.0]),
            dict(model="transformer:dna-xlstm-4m", ms_per_token=6.0,
                 rounds_ms_per_token=[6.0, 5.0, 7.0])]),
        "cell-bf16": dict(settings=dict(batch=8, heads=4, seq_len=4096, head_dim=128,
                                        dtype="bfloat16"), failed={"mlstm_kernels:x": "error: y"},
                          results=[dict(form="bioxlstm", forward_ms=1.0, backward_ms=2.0),
                                   dict(form="mlstm_kernels:triton_xl_chunk@64", forward_ms=0.5,
                                        backward_ms=1.0),
                                   dict(form="mlstm_kernels:triton_xl_chunk@128", forward_ms=0.5,
                                        backward_ms=1.5)])})
    text = gpu_check.summary(results)
    assert "| dna-xlstm-4m | 4,096 | 8 | 100 | 100 | 1.10x | 5 | 10 | 20.0% | ≥ 1x: met |" in text
    assert "| dna-xlstm-4m | 32,768 | 1 | 200 | 100 | 2.50x | 5 | 10 | 20.0% | ≥ 3x: MISSED |" in text
    assert "| 6.00x | - | - | ≥ 5x: met |" in text
    assert "(mlstm_kernels:triton_xl_chunk@64): 2.00x, target ≤ 1.5x: MISSED" in text
    assert "| mlstm_kernels:x | error: y |" in text


def test_every_gpu_part_command_parses(gpu_check, tmp_path, monkeypatch):
    """The GPU run's own command lines (never run here) through each script's argument parser."""
    import importlib

    plan = gpu_check.parts(False, tmp_path, tmp_path)
    assert [p.name for p in plan][:4] == ["install", "env", "tests", "tests-triton"]
    assert {"throughput-4096", "throughput-32768", "generation-32768", "cell-bf16",
            "compile"} <= {p.name for p in plan}
    for part in plan:
        command = part.command
        if command[1:3] == ["-m", "pytest"]:
            assert all((BENCHMARKS.parent / arg).exists() for arg in command if arg.startswith("tests"))
            continue
        script = Path(command[1])
        if script.name == "gpu_check.py":
            continue
        module = importlib.import_module(script.stem)
        args = module.parse_args(command[2:])
        assert args.device == "cuda" and args.json.endswith(part.result), part.name

