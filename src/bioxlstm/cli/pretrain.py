"""`bioxlstm pretrain`: train a language model on a genome, FASTA records, MSA families or SMILES."""

from __future__ import annotations

import argparse
from pathlib import Path

from bioxlstm.cli.args import (
    FRACTION,
    NON_NEGATIVE,
    NON_NEGATIVE_NUMBER,
    POSITIVE,
    POSITIVE_NUMBER,
    PROBABILITY,
    SEED,
    integer,
    number,
)
from bioxlstm.config import TrainConfig

DESCRIPTION = (
    "Pretrain an xLSTM LM. With --genome: random windows of the train split of a genome FASTA "
    "(plain or bgzip, random access), split by a BED file of intervals (chrom start end "
    "train|valid|test, the HyenaDNA convention) or by whole chromosomes (--valid-chroms), validated "
    "on the valid split, with reverse-complement augmentation (--rc-aug). With --fasta: causal LM "
    "on the records of a FASTA file, the last --valid-fraction held out. With --msa-dir (proteins): "
    "one family per sample, members in random order with fill-in-the-middle and per-sequence "
    "position ids, split by family (docs/protein.md). With --smiles: one molecule per row (invalid "
    "SMILES counted and skipped, vocabulary learned from the file); --smiles-domains: in-context "
    "rows of one domain's molecules (docs/chem.md). Writes metrics.jsonl, run.json and checkpoint/ "
    "into --run-dir. A checkpoint is saved every --save-every-minutes (default %(minutes)g), every "
    "--save-every steps if set, at the end, and on Ctrl-C or SIGTERM (the current step finishes "
    "first; the command to continue is printed). --resume continues exactly where the newest "
    "complete checkpoint stopped, with the run's own settings (only --steps and bookkeeping such "
    "as the checkpoint interval may change), or starts the run if it has no checkpoint yet. One "
    "process at a time may train in a run directory. Runs unchanged under torchrun (DDP, or FSDP "
    "with 'distributed: fsdp' in --train-config; docs/scaling.md).")

DATA_OPTIONS = {"genome": "genome", "fasta": "fasta", "msa_dir": "msa_dir", "smiles": "smiles",
                "smiles_domains": "smiles_domains"}
TRAIN_OPTIONS = {"steps": "max_steps", "batch_size": "batch_size", "lr": "lr", "seed": "seed",
                 "device": "device", "save_every": "save_every",
                 "save_every_minutes": "save_every_minutes", "eval_every": "eval_every",
                 "warmup_steps": "warmup_steps"}


def register(sub: argparse._SubParsersAction) -> None:
    defaults = TrainConfig()
    p = sub.add_parser("pretrain", aliases=["train"],
                       help="pretrain on a genome (CLM/MLM), FASTA records, MSA families or SMILES",
                       description=DESCRIPTION % {"minutes": defaults.save_every_minutes})
    model = p.add_mutually_exclusive_group()
    model.add_argument("--preset", help="named model, see `bioxlstm presets` (default dna-xlstm-500k; "
                                        "with --resume: the run's model)")
    model.add_argument("--model-config", help="YAML model config (may start from `preset:`)")
    p.add_argument("--bidirectional", action="store_true",
                   help="make the model bidirectional (weight-shared directions; needs mlm)")
    p.add_argument("--rc-equivariant", action="store_true",
                   help="make the model RC-equivariant by parameter sharing (DNA; needs mlm)")
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--genome", help="genome FASTA, plain or bgzip (indexed with pyfaidx)")
    data.add_argument("--fasta", help="FASTA file of records, plain or gzip (causal LM)")
    data.add_argument("--msa-dir", help="directory of protein families (a3m/Stockholm/aligned FASTA "
                                        "files, or OpenProteinSet-style subdirectories): "
                                        "homology-aware training with fill-in-the-middle, split by "
                                        "family (--seq-len: tokens per family context)")
    data.add_argument("--smiles", help="molecules, one SMILES a line (.smi/.txt/.csv, gzip allowed): "
                                       "Chem-xLSTM causal LM, [BEG] smiles [END] per row")
    data.add_argument("--smiles-domains", help="molecular domains, one a line ('.'-joined SMILES): "
                                               "in-context training, split by domain")
    p.add_argument("--intervals", help="with --genome: BED file of chrom, start, end, split")
    p.add_argument("--valid-chroms", nargs="+", default=[], metavar="CHROM",
                   help="with --genome and no --intervals: chromosomes held out for validation")
    p.add_argument("--test-chroms", nargs="+", default=[], metavar="CHROM",
                   help="with --genome and no --intervals: chromosomes held out for testing")
    p.add_argument("--objective", choices=("clm", "mlm"), default="clm",
                   help="with --genome: causal LM, or masked LM of 15%% of bases, 80/10/10 "
                        "(default clm)")
    p.add_argument("--rc-aug", type=PROBABILITY, metavar="P",
                   help="with --genome or DNA --fasta: reverse-complement each training window with "
                        "probability P (default 0; 0.5 for post-hoc conjoined models)")
    p.add_argument("--run-dir", required=True, help="output directory of the run")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --run-dir from its newest complete checkpoint")
    _add_training_options(p, defaults)
    p.add_argument("--valid-fraction", type=FRACTION, default=0.1,
                   help="with --fasta: held-out tail of the tokens; with --msa-dir: share of "
                        "families held out for validation; with --smiles / --smiles-domains: share "
                        "of molecules / domains held out (default 0.1)")
    p.add_argument("--test-fraction", type=number(0, 1, below=True),
                   help="with --msa-dir: share of families held out for testing, listed in "
                        "run-dir/families.json (default 0.1)")
    p.add_argument("--fim-rate", type=NON_NEGATIVE_NUMBER,
                   help="with --msa-dir: mean number of fill-in-the-middle spans per sequence "
                        "(Poisson, at most 5; default 1)")
    p.set_defaults(func=run)


def _add_training_options(p: argparse.ArgumentParser, defaults: TrainConfig) -> None:
    """Training settings; each overrides --train-config (and, on --resume, the run's own)."""
    p.add_argument("--train-config", help="YAML training config (TrainConfig fields, see "
                                          "configs/); the options below override it")
    p.add_argument("--steps", type=POSITIVE, help=f"optimiser steps (default {defaults.max_steps})")
    p.add_argument("--batch-size", type=POSITIVE,
                   help="global micro-batch: sequences per micro-step summed over all processes; "
                        "under torchrun each of N ranks trains on BATCH_SIZE/N of them (must "
                        f"divide) (default {defaults.batch_size})")
    p.add_argument("--seq-len", type=integer(2),
                   help="tokens per window or family context, at least 2 (default: the model's "
                        "context length)")
    p.add_argument("--lr", type=POSITIVE_NUMBER, help=f"peak learning rate (default {defaults.lr:g})")
    p.add_argument("--warmup-steps", type=NON_NEGATIVE,
                   help="linear warmup steps (default: a tenth of the run)")
    p.add_argument("--eval-every", type=NON_NEGATIVE,
                   help="validate on the held-out data every N steps and at the end; 0: never "
                        "(default: every tenth of the run)")
    p.add_argument("--save-every", type=NON_NEGATIVE,
                   help=f"also save a checkpoint every N steps; 0: off (default {defaults.save_every})")
    p.add_argument("--save-every-minutes", type=NON_NEGATIVE_NUMBER, metavar="MINUTES",
                   help="save a checkpoint when this many minutes have passed since the last; 0: "
                        f"off (default {defaults.save_every_minutes:g})")
    p.add_argument("--seed", type=SEED, help=f"random seed (default {defaults.seed})")
    p.add_argument("--device", help=f"cpu, cuda, cuda:N or auto (default {defaults.device})")


def run(args: argparse.Namespace) -> None:
    from bioxlstm.distributed import env_from_torchrun
    from bioxlstm.tasks.pretrain_run import PretrainRequest, run_pretraining

    kind = next(k for k in DATA_OPTIONS if getattr(args, k) is not None)
    overrides = {field: getattr(args, option) for option, field in TRAIN_OPTIONS.items()
                 if getattr(args, option) is not None}
    request = PretrainRequest(
        run_dir=args.run_dir, data_kind=kind, data_path=getattr(args, kind), resume=args.resume,
        preset=args.preset, model_config=args.model_config, bidirectional=args.bidirectional,
        rc_equivariant=args.rc_equivariant, train_config=args.train_config,
        train_overrides=overrides, seq_len=args.seq_len, objective=args.objective,
        rc_aug=args.rc_aug, intervals=args.intervals, valid_chroms=tuple(args.valid_chroms),
        test_chroms=tuple(args.test_chroms), valid_fraction=args.valid_fraction,
        test_fraction=args.test_fraction, fim_rate=args.fim_rate)
    run_pretraining(request)
    if env_from_torchrun().is_main:
        print(f"checkpoint: {Path(args.run_dir) / 'checkpoint'}")
