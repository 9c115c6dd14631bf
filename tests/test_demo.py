"""The demo task end to end on the bundled genome, shortened to a few steps."""

import math

from bioxlstm.tasks.demo import DATA, run_demo


def test_demo_runs_on_the_bundled_genome(tmp_path, capsys):
    assert DATA.is_file()
    results = run_demo(tmp_path / "demo", steps=2)
    out = capsys.readouterr().out
    assert (tmp_path / "demo" / "checkpoint" / "model.safetensors").is_file()
    assert set(results) == {"xlstm_valid_nll", "kmer0_valid_nll", "kmer3_valid_nll", "kmer6_valid_nll"}
    # an untrained-ish model on 4 bases sits near log(4) nats; the order-0 baseline likewise
    assert abs(results["kmer0_valid_nll"] - math.log(4)) < 0.05
    assert math.isfinite(results["xlstm_valid_nll"]) and results["xlstm_valid_nll"] < 2.6
    generated = [line.strip() for line in out.splitlines() if line.startswith("  ATG")]
    assert len(generated) == 3
