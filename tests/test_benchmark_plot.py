"""plot.py draws several throughput.py reports as one, and refuses to mix machines."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
OK = {"status": "ok", "tokens_per_s": 100.0, "peak_mib": 10.0}


@pytest.fixture(scope="module")
def plot():
    pytest.importorskip("matplotlib")
    spec = importlib.util.spec_from_file_location("plot", BENCHMARKS / "plot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def report(cpu: str, rows: list[tuple[str, int, float]]) -> dict:
    return {"machine": {"cpu": cpu, "device": "cpu"},
            "results": [{"model": m, "kind": "xlstm", "seq_len": s, "checkpointing": False,
                         "bf16": False, "fwd": OK, "train": {**OK, "tokens_per_s": t}}
                        for m, s, t in rows]}


def test_merge_keeps_every_case_and_later_files_win(plot) -> None:
    main = report("cpu A", [("a", 256, 1.0), ("a", 1024, 2.0), ("b", 256, 3.0)])
    long = report("cpu A", [("a", 1024, 5.0), ("a", 32768, 4.0)])
    merged = plot.merge([main, long])
    train = {(r["model"], r["seq_len"]): r["train"]["tokens_per_s"] for r in merged["results"]}
    assert train == {("a", 256): 1.0, ("a", 1024): 5.0, ("b", 256): 3.0, ("a", 32768): 4.0}
    assert merged["machine"]["cpu"] == "cpu A"
    assert plot.merge([]) is None


def test_merge_refuses_reports_from_another_cpu(plot) -> None:
    with pytest.raises(SystemExit, match="different machines"):
        plot.merge([report("cpu A", [("a", 256, 1.0)]), report("cpu B", [("a", 512, 1.0)])])


def test_plot_draws_several_files_and_skips_a_missing_one(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    paths = []
    for name, rows in (("main.json", [("a", 256, 1.0)]), ("long.json", [("a", 32768, 2.0)])):
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(report("cpu A", rows)))
    out = tmp_path / "img"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "plot.py"), "--throughput", *map(str, paths),
                           str(tmp_path / "absent.json"), "--generation", str(tmp_path / "none.json"),
                           "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "absent.json: not found" in done.stderr
    assert (out / "throughput.png").stat().st_size > 0 and not (out / "generation.png").exists()
