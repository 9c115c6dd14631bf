"""The demo task end to end on the bundled human data, shortened to a few steps."""

import math

from bioxlstm.tasks.demo import GENOME, PROMOTERS, run_demo


def test_demo_runs_on_the_bundled_human_data(tmp_path, capsys):
    assert GENOME.genome.is_file() and GENOME.intervals.is_file() and PROMOTERS.is_file()
    results = run_demo(tmp_path / "demo", steps=2, finetune_rows=(48, 32), epochs=1)
    out = capsys.readouterr().out
    assert (tmp_path / "demo" / "pretrain" / "checkpoint" / "model.safetensors").is_file()
    assert (tmp_path / "demo" / "finetune" / "predictions.csv").is_file()
    assert set(results) == {"xlstm_valid_nll", "kmer0_valid_nll", "kmer3_valid_nll", "kmer6_valid_nll",
                            "finetune_test_accuracy", "finetune_test_mcc", "finetune_test_f1"}
    # human DNA is not uniform: the order-0 baseline sits a little under log(4) nats per base
    assert 1.30 < results["kmer0_valid_nll"] < math.log(4)
    assert results["kmer6_valid_nll"] < results["kmer0_valid_nll"]
    assert math.isfinite(results["xlstm_valid_nll"]) and results["xlstm_valid_nll"] < 2.6
    assert 0.0 <= results["finetune_test_accuracy"] <= 1.0
    generated = [line.strip() for line in out.splitlines() if line.startswith("   ATG")]
    assert len(generated) == 3 and all(set(g) <= set("ACGTN") for g in generated)
    # a second run reuses the finished pretraining and redoes the fine-tuning
    again = run_demo(tmp_path / "demo", steps=2, finetune_rows=(48, 32), epochs=1)
    assert again["xlstm_valid_nll"] == results["xlstm_valid_nll"]
