"""`bioxlstm benchmark`: run a suite of downstream tasks over seeds into one table."""

from __future__ import annotations

import argparse

from bioxlstm.cli.args import POSITIVE, SEED, add_device
from bioxlstm.cli.finetune import add_data_options, add_model_options, add_training_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark", help="run a suite of downstream tasks over seeds into one table",
        description="Fine-tune on every task of a suite directory, over --seeds seeds, beside a "
                    "from-scratch model (--scratch or --preset) and the alphabet's linear baseline, "
                    "with the protocol of `finetune`. A suite holds one subdirectory per task with "
                    "train.csv and test.csv (also .tsv or .fa, optionally .gz; the Nucleotide "
                    "Transformer layout) or Genomic Benchmarks' train/CLASS/*.txt and test/CLASS/*.txt "
                    "folders. Writes results.csv (every metric), results.md (mean ± sd per task and "
                    "method) and results.png into --out; each finished (task, seed, method) cell is "
                    "saved at once, so rerunning the same command resumes a stopped run.")
    p.add_argument("suite", metavar="SUITE_DIR",
                   help="suite directory (the bundled one: $(bioxlstm datasets dna_promoter_suite))")
    p.add_argument("--checkpoint", help="pretrained checkpoint to fine-tune on every task")
    scratch = p.add_mutually_exclusive_group()
    scratch.add_argument("--scratch", action="store_true",
                         help="also train the checkpoint's architecture from a fresh initialisation")
    scratch.add_argument("--preset", help="also train this preset from scratch (see `presets`)")
    p.add_argument("--out", required=True, help="output directory; rerun into it to resume")
    p.add_argument("--seeds", type=POSITIVE, default=3,
                   help="repeats of each task, seeds --seed, --seed + 1, ... (default 3)")
    p.add_argument("--seed", type=SEED, default=0, help="first seed (default 0)")
    p.add_argument("--tasks", help="comma-separated task names to run (default: every subdirectory)")
    p.add_argument("--metric", default="auto",
                   choices=("auto", "accuracy", "mcc", "f1", "macro_f1", "auroc", "spearman", "pearson",
                            "r2", "rmse"),
                   help="metric of the table and plot (default auto: accuracy for classification, "
                        "auroc for multilabel, r2 for regression); results.csv holds every metric")
    p.add_argument("--keep-models", action="store_true",
                   help="keep each cell's fitted model (runs/TASK/METHOD-seedS/classifier/)")
    p.add_argument("--no-plot", action="store_true", help="write no results.png (no matplotlib needed)")
    add_training_options(p)
    add_model_options(p)
    add_data_options(p)
    add_device(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from bioxlstm.cli.finetune import columns, finetune_config
    from bioxlstm.tasks.benchmark import BenchmarkConfig, run_benchmark

    tasks = tuple(t.strip() for t in (args.tasks or "").split(",") if t.strip())
    config = BenchmarkConfig(seeds=args.seeds, seed=args.seed, metric=args.metric, tasks=tasks,
                             keep_models=args.keep_models, plot=not args.no_plot,
                             finetune=finetune_config(args))
    result = run_benchmark(args.suite, args.out, config, checkpoint=args.checkpoint,
                           preset_name=args.preset, scratch=args.scratch, columns=columns(args))
    print(result.table)
    print(f"\n{result.ran} cells run, {result.skipped} found finished; files: "
          + ", ".join(str(f) for f in result.files))
