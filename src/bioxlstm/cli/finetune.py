"""`bioxlstm finetune`: fine-tune a checkpoint (or a fresh preset) as a sequence classifier."""

from __future__ import annotations

import argparse

from bioxlstm.cli.args import (
    FRACTION,
    NON_NEGATIVE_NUMBER,
    POSITIVE,
    POSITIVE_NUMBER,
    PROBABILITY,
    add_device,
    add_seed,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune", help="fine-tune a checkpoint as a sequence classifier",
        description="Sequence classification: a pretrained backbone (or a fresh preset, as a "
                    "from-scratch baseline), mean pooling over the bases and a linear head, trained "
                    "with AdamW and a warmup+cosine schedule. 10%% of --train is held out to choose "
                    "the best epoch. Data: CSV/TSV with 'sequence' and 'label' columns (gzip allowed) "
                    "or FASTA with '>id label=VALUE' headers. Writes predictions.csv, metrics.json, "
                    "run.json and classifier/ into --out.")
    backbone = p.add_mutually_exclusive_group(required=True)
    backbone.add_argument("--checkpoint", help="pretrained checkpoint directory to fine-tune")
    backbone.add_argument("--preset", help="train this preset from scratch instead (see `presets`)")
    p.add_argument("--train", required=True, help="labelled training sequences (CSV, TSV or FASTA)")
    p.add_argument("--test", help="labelled test sequences (default: a seeded split of --train)")
    p.add_argument("--out", required=True, help="output directory (must not hold a run)")
    p.add_argument("--epochs", type=POSITIVE, default=10, help="passes over the training set (default 10)")
    p.add_argument("--lr", type=POSITIVE_NUMBER, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--batch-size", type=POSITIVE, default=32, help="sequences per batch (default 32)")
    p.add_argument("--weight-decay", type=NON_NEGATIVE_NUMBER, default=0.1,
                   help="AdamW weight decay (default 0.1)")
    p.add_argument("--warmup-fraction", type=PROBABILITY, default=0.1,
                   help="share of steps spent warming up (default 0.1)")
    p.add_argument("--max-length", type=POSITIVE,
                   help="truncate sequences to this many bases (default: the model's context - 1)")
    p.add_argument("--freeze-backbone", action="store_true",
                   help="train only the linear head (a linear probe)")
    p.add_argument("--rc-conjoin", action="store_true",
                   help="DNA: train with reverse-complement augmentation and predict with the mean "
                        "of both strands' logits (post-hoc conjoining)")
    p.add_argument("--select", choices=("accuracy", "mcc"), default="accuracy",
                   help="validation metric that picks the best epoch (default accuracy)")
    p.add_argument("--valid-fraction", type=FRACTION, default=0.1,
                   help="share of --train held out for model selection (default 0.1)")
    p.add_argument("--test-fraction", type=FRACTION, default=0.1,
                   help="share of --train used as test set when there is no --test (default 0.1)")
    p.add_argument("--sequence-column", default="sequence", help="sequence column (default sequence)")
    p.add_argument("--label-column", default="label",
                   help="label column, or the header key in FASTA (default label)")
    p.add_argument("--id-column", help="column of record ids (default: row numbers)")
    add_seed(p)
    add_device(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from bioxlstm.data.labelled import Columns
    from bioxlstm.tasks.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(
        epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
        warmup_fraction=args.warmup_fraction, batch_size=args.batch_size,
        max_length=args.max_length, freeze_backbone=args.freeze_backbone, rc_conjoin=args.rc_conjoin,
        valid_fraction=args.valid_fraction, test_fraction=args.test_fraction, select=args.select,
        seed=args.seed, device=args.device)
    columns = Columns(args.sequence_column, args.label_column, args.id_column)
    result = finetune(args.train, args.out, config, test=args.test, checkpoint=args.checkpoint,
                      preset_name=args.preset, columns=columns)
    scores = "  ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
    print(f"test: {scores}  (best epoch {result.best_epoch} of {args.epochs}, by valid {args.select})")
    print(f"outputs: {result.out_dir} (predictions.csv, metrics.json, run.json, classifier/)")
