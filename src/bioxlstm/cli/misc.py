"""`bioxlstm presets`, `kernels`, `evaluate-molecules`, `plot` and `demo`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bioxlstm.cli.args import POSITIVE, add_device, add_seed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("presets", help="list the named model configurations and their sizes",
                       description="Print every preset with its shape and exact parameter count.")
    p.set_defaults(func=run_presets)

    p = sub.add_parser(
        "datasets", help="list the bundled sample data, or print one data set's path",
        description="The small real data sets that ship with bioxlstm (genomes, promoters, protein "
                    "families and assays, molecules), with what each is and its license; each "
                    "folder's PROVENANCE.md says exactly where a file came from. With NAME, print "
                    "that data set's path, e.g. --genome \"$(bioxlstm datasets human_demo_genome)\".")
    p.add_argument("name", nargs="?", help="a data set's name: print its path")
    p.set_defaults(func=run_datasets)

    p = sub.add_parser(
        "kernels", help="build the optional CPU kernels now and say which are available",
        description="Compile (or load from torch's cache) every optional C++ CPU kernel: the mLSTM "
                    "cell, input side and output gate, the sLSTM scan and input side, the GELU gate "
                    "and the generation step. Each builds on first use anyway (25-60 s apiece, "
                    "cached per machine); run this once after installing, e.g. in a container "
                    "image, to keep that time out of the first training steps. A kernel that cannot "
                    "be built (no C++ compiler) is reported; its PyTorch form runs.")
    p.set_defaults(func=run_kernels)

    p = sub.add_parser(
        "evaluate-molecules", help="validity, novelty, FCD, ... of generated SMILES",
        description="Metrics of generated molecules (RDKit, fcd_torch): validity, uniqueness, "
                    "novelty against --train and --reference, unique Bemis-Murcko scaffolds, internal "
                    "diversity, the Frechet ChemNet Distance to --reference, and property means. "
                    "Prints a table; --out DIR also gets metrics.json and properties.png.")
    p.add_argument("generated", help="generated SMILES, one a line (blank lines count as invalid)")
    p.add_argument("--reference", help="reference SMILES (held-out or domain molecules) for FCD, "
                                       "reference novelty and the property plot")
    p.add_argument("--train", help="training SMILES, for novelty")
    p.add_argument("--out", help="directory for metrics.json and properties.png")
    add_device(p, default="cpu")
    add_seed(p, "seed of the subset used for internal diversity")
    p.set_defaults(func=run_evaluate_molecules)

    p = sub.add_parser("plot", help="draw a run's loss, perplexity and learning-rate curves",
                       description="Read RUN_DIR/metrics.jsonl and draw training and validation loss, "
                                   "perplexity and the learning rate against step to a PNG.")
    p.add_argument("run_dir", help="run directory (holds metrics.jsonl)")
    p.add_argument("--out", help="PNG path (default RUN_DIR/curves.png)")
    p.set_defaults(func=run_plot)

    p = sub.add_parser("demo", help="pretrain, fine-tune and sample a small DNA-xLSTM on human data",
                       description="The tour on bundled human DNA: pretrain a small DNA-xLSTM "
                                   "(held-out chr22 window for validation), compare with k-mer "
                                   "baselines, fine-tune on promoter sequences, generate.")
    p.add_argument("--run-dir", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--steps", type=POSITIVE, help="optimiser steps (default 300; --quick: 2)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke test of the whole tour in about a minute: 2 steps, 48 fine-tuning "
                        "rows and 1 epoch (the numbers mean nothing)")
    add_seed(p)
    p.set_defaults(func=run_demo)


def run_presets(args: argparse.Namespace) -> None:
    from bioxlstm.tasks.presets import presets_table

    print(presets_table())


def run_datasets(args: argparse.Namespace) -> None:
    from bioxlstm import datasets

    if args.name is not None:
        print(datasets.path(args.name))
        return
    for entry in datasets.list():
        print(f"{entry.name:<26}{entry.description}\n{'':<26}license: {entry.license}; "
              f"provenance: {entry.provenance}")


def run_kernels(args: argparse.Namespace) -> None:
    from bioxlstm.layers.cpu_build import extensions_disabled
    from bioxlstm.layers.cpu_kernels import KERNELS, build_cpu_kernels

    if extensions_disabled():
        print("BIOXLSTM_NO_EXTENSIONS=1 is set: every CPU kernel is off, the PyTorch code runs")
        return
    print(f"building or loading {len(KERNELS)} CPU kernels (25-60 s each the first time)", flush=True)

    def report(name: str, ok: bool, seconds: float) -> None:
        status = "ready" if ok else "unavailable, the PyTorch code runs instead"
        print(f"  {name:<20}{status} ({seconds:.1f} s)", flush=True)

    build_cpu_kernels(report)


def run_evaluate_molecules(args: argparse.Namespace) -> None:
    from bioxlstm.tasks.evaluate_molecules import evaluate_molecule_file, metrics_table

    result = evaluate_molecule_file(args.generated, args.reference, args.train, args.out,
                                    args.device, args.seed)
    print(metrics_table(result))
    if args.out:
        print(f"wrote {Path(args.out) / 'metrics.json'} and {Path(args.out) / 'properties.png'}",
              file=sys.stderr)


def run_plot(args: argparse.Namespace) -> None:
    from bioxlstm.tasks.plot_run import plot_run

    print(f"wrote {plot_run(args.run_dir, args.out)}")


def run_demo(args: argparse.Namespace) -> None:
    from bioxlstm.tasks.demo import run_demo

    if args.quick:
        run_demo(args.run_dir, args.steps or 2, seed=args.seed, finetune_rows=(48, 32), epochs=1)
    else:
        run_demo(args.run_dir, args.steps or 300, seed=args.seed)
