"""`bioxlstm finetune`: fine-tune a checkpoint (or a fresh preset) for classification or regression."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from bioxlstm.cli.args import (
    FRACTION,
    NON_NEGATIVE,
    NON_NEGATIVE_NUMBER,
    POSITIVE,
    POSITIVE_NUMBER,
    PROBABILITY,
    add_device,
    add_seed,
    integer,
)

if TYPE_CHECKING:
    from bioxlstm.data.labelled import Columns
    from bioxlstm.tasks.finetune import FinetuneConfig

SELECT = ("auto", "accuracy", "mcc", "f1", "macro_f1", "auroc", "spearman", "pearson", "r2", "rmse")


def register(sub: argparse._SubParsersAction) -> None:
    _register_finetune(sub)
    _register_fitness_supervised(sub)


def _register_finetune(sub: argparse._SubParsersAction) -> None:
    """`bioxlstm finetune`."""
    p = sub.add_parser(
        "finetune", help="fine-tune a checkpoint for classification or regression, beside a baseline",
        description="Downstream learning on DNA, protein or SMILES inputs: a pretrained backbone (or a "
                    "fresh preset, as a from-scratch baseline), mean pooling and a linear or MLP head, "
                    "trained with AdamW and a warmup+cosine schedule, for classification (binary, "
                    "multi-class, multilabel) or regression. 10%% of --train is held out to choose the "
                    "best epoch; a linear baseline is fitted on the same split and tested on the same "
                    "records. Data: CSV/TSV with a 'sequence' (or 'smiles') column and target columns "
                    "(gzip allowed), or FASTA with '>id label=VALUE' headers; empty or NA targets are "
                    "left out of loss and metrics. Writes predictions.csv, baseline_predictions.csv, "
                    "metrics.json, run.json and classifier/ into --out.")
    backbone = p.add_mutually_exclusive_group(required=True)
    backbone.add_argument("--checkpoint", help="pretrained checkpoint directory to fine-tune")
    backbone.add_argument("--preset", help="train this preset from scratch instead (see `presets`)")
    p.add_argument("--train", required=True, help="labelled training data (CSV, TSV or FASTA)")
    p.add_argument("--test", help="labelled test data (default: a seeded split of --train)")
    p.add_argument("--out", required=True, help="output directory (must not hold a run)")
    add_training_options(p)
    p.add_argument("--test-fraction", type=FRACTION, default=0.1,
                   help="share of --train used as test set when there is no --test (default 0.1)")
    add_model_options(p)
    p.add_argument("--from-scratch", action="store_true",
                   help="train the --checkpoint's architecture from a fresh initialisation (the "
                        "from-scratch control with the same model and vocabulary)")
    add_data_options(p)
    add_seed(p)
    add_device(p)
    p.set_defaults(func=run)


def _register_fitness_supervised(sub: argparse._SubParsersAction) -> None:
    """`bioxlstm fitness-supervised`."""
    p = sub.add_parser(
        "fitness-supervised", help="protein fitness learnt from part of a deep mutational scan",
        description="Supervised fitness: each measured substitution of --dms becomes its full sequence, "
                    "a seeded split holds out variants at random or whole positions (--split position: "
                    "no test position is seen in training), the checkpoint is fine-tuned for "
                    "regression on the rest with the protocol of `finetune` (epoch picked by Spearman "
                    "on a validation share) and Spearman's rho on the test variants is reported beside "
                    "the baseline and the zero-shot FIM score of `fitness` on the same variants. "
                    "Writes data/, finetune/, zero_shot.csv and summary.json into --out.")
    p.add_argument("checkpoint", help="protein checkpoint directory (a rope model for the zero-shot score)")
    p.add_argument("--dms", required=True,
                   help="assay CSV/TSV with 'mutant' (A23V or A23V:G45W) and a score column (gzip allowed)")
    p.add_argument("--wt", help="wild-type sequence, or a FASTA file whose first record it is")
    p.add_argument("--msa", help="family of the protein: its first record is the default wild type, and "
                                 "the zero-shot score draws homologs from it")
    p.add_argument("--out", required=True, help="output directory (must not hold a run)")
    p.add_argument("--split", choices=("random", "position"), default="random",
                   help="hold out random variants or whole positions (default random)")
    p.add_argument("--test-fraction", type=FRACTION, default=0.2,
                   help="share of the variants tested (default 0.2)")
    p.add_argument("--score-column", default="DMS_score", help="measured score column (default DMS_score)")
    p.add_argument("--first-position", type=integer(), default=1,
                   help="number of the wild type's first residue in the mutant names (default 1)")
    p.add_argument("--no-zero-shot", action="store_true", help="skip the zero-shot FIM score")
    p.add_argument("--num-homologs", type=NON_NEGATIVE,
                   help="with --msa: homologs in the zero-shot context (default 0: the query alone)")
    p.add_argument("--replicates", type=POSITIVE,
                   help="with --msa: zero-shot context draws averaged (default 1)")
    add_training_options(p, auto_select="spearman")
    add_model_options(p, auto_baseline="onehot, per-position amino acid codes, for --split random; "
                                       "kmer, 2-mer counts, for --split position")
    add_seed(p)
    add_device(p)
    p.set_defaults(func=run_fitness_supervised)


def add_training_options(p: argparse.ArgumentParser, auto_select: str = "accuracy for "
                         "classification, auroc for multilabel, r2 for regression") -> None:
    """The optimisation and model-selection options shared with `benchmark` and
    `fitness-supervised`; `auto_select` says in the help what --select auto means."""
    p.add_argument("--epochs", type=POSITIVE, default=10, help="passes over the training set (default 10)")
    p.add_argument("--lr", type=POSITIVE_NUMBER, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--batch-size", type=POSITIVE, default=32, help="sequences per batch (default 32)")
    p.add_argument("--weight-decay", type=NON_NEGATIVE_NUMBER, default=0.1,
                   help="AdamW weight decay (default 0.1)")
    p.add_argument("--warmup-fraction", type=PROBABILITY, default=0.1,
                   help="share of steps spent warming up (default 0.1)")
    p.add_argument("--select", choices=SELECT, default="auto",
                   help=f"validation metric that picks the best epoch (default auto: {auto_select})")
    p.add_argument("--valid-fraction", type=FRACTION, default=0.1,
                   help="share of the training data held out for model selection (default 0.1)")


def add_model_options(p: argparse.ArgumentParser,
                      auto_baseline: str = "kmer for DNA and proteins, fingerprint for SMILES") -> None:
    """How the backbone adapts, the head and the baseline (shared with `benchmark` and
    `fitness-supervised`); `auto_baseline` says in the help what --baseline auto means."""
    p.add_argument("--adapt", choices=("full", "frozen", "lora"),
                   help="how the backbone learns: full fine-tuning, frozen (only the head trains, on "
                        "pooled features computed once) or lora (peft adapters on the up/down "
                        "projections) (default full)")
    p.add_argument("--freeze-backbone", action="store_true", help="the same as --adapt frozen")
    p.add_argument("--head", choices=("linear", "mlp"), default="linear",
                   help="head on the pooled features (default linear)")
    p.add_argument("--head-hidden", type=POSITIVE,
                   help="hidden width of --head mlp (default: the model width)")
    p.add_argument("--lora-rank", type=POSITIVE, help="rank of the LoRA updates (default 8)")
    p.add_argument("--lora-alpha", type=POSITIVE_NUMBER,
                   help="LoRA scaling numerator: updates are scaled by alpha / rank (default 16)")
    p.add_argument("--max-length", type=POSITIVE,
                   help="truncate sequences to this many tokens (default: the model's context - 1)")
    p.add_argument("--rc-conjoin", action="store_true",
                   help="DNA: train with reverse-complement augmentation and predict with the mean "
                        "of both strands' outputs (post-hoc conjoining)")
    p.add_argument("--baseline", choices=("auto", "kmer", "onehot", "fingerprint", "none"),
                   default="auto",
                   help="linear baseline fitted on the same split: k-mer counts or one-hot codes "
                        f"(DNA, protein), Morgan fingerprints (SMILES), or none (default auto: "
                        f"{auto_baseline})")
    p.add_argument("--kmer", type=POSITIVE,
                   help="k of the k-mer baseline (default 4 for DNA, 2 for proteins)")


def add_data_options(p: argparse.ArgumentParser) -> None:
    """What the data's columns and targets are (shared with `benchmark`)."""
    p.add_argument("--task", choices=("auto", "classification", "multilabel", "regression"),
                   default="auto",
                   help="what the targets are (default auto: text or at most 10 integer levels in one "
                        "column is classification, other numbers regression, several 0/1 columns "
                        "multilabel; the choice is announced)")
    p.add_argument("--sequence-column",
                   help="sequence column (default sequence, or smiles for a SMILES model)")
    p.add_argument("--label-column",
                   help="classification label column, or the header key in FASTA (default label)")
    p.add_argument("--target-column", action="append", metavar="NAME[,NAME...]",
                   help="target column(s); repeat or separate with commas (default: --label-column)")
    p.add_argument("--id-column", help="column of record ids (default: row numbers)")


def finetune_config(args: argparse.Namespace, **overrides: Any) -> FinetuneConfig:
    """The FinetuneConfig of the parsed options; refuses options that do not apply, naming them."""
    from bioxlstm.errors import ConfigError
    from bioxlstm.tasks.finetune import FinetuneConfig

    adapt = args.adapt or ("frozen" if args.freeze_backbone else "full")
    if args.freeze_backbone and adapt != "frozen":
        raise ConfigError(f"--freeze-backbone means --adapt frozen; it cannot go with --adapt {adapt}")
    for option, value in (("--lora-rank", args.lora_rank), ("--lora-alpha", args.lora_alpha)):
        if value is not None and adapt != "lora":
            raise ConfigError(f"{option} applies to --adapt lora only")
    settings = dict(
        epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
        warmup_fraction=args.warmup_fraction, batch_size=args.batch_size,
        max_length=args.max_length, rc_conjoin=args.rc_conjoin, valid_fraction=args.valid_fraction,
        test_fraction=getattr(args, "test_fraction", 0.1), select=args.select, seed=args.seed,
        device=args.device,
        task=args.task, adapt=adapt, head=args.head, head_hidden=args.head_hidden,
        lora_rank=args.lora_rank or 8, lora_alpha=args.lora_alpha or 16.0, baseline=args.baseline,
        kmer=args.kmer, from_scratch=getattr(args, "from_scratch", False))
    return FinetuneConfig(**{**settings, **overrides})


def columns(args: argparse.Namespace) -> Columns:
    """The Columns of the parsed options; refuses --label-column beside --target-column."""
    from bioxlstm.data.labelled import Columns
    from bioxlstm.errors import ConfigError

    targets = tuple(name.strip() for value in args.target_column or [] for name in value.split(",")
                    if name.strip())
    if targets and args.label_column is not None:
        raise ConfigError("give the targets with --target-column or --label-column, not both")
    if args.target_column and not targets:
        raise ConfigError("--target-column names no column")
    return Columns(args.sequence_column, args.label_column or "label", args.id_column, targets)


def run(args: argparse.Namespace) -> None:
    from bioxlstm.tasks.finetune import finetune
    from bioxlstm.tasks.finetune_report import TABLE_METRICS

    config = finetune_config(args)
    result = finetune(args.train, args.out, config, test=args.test, checkpoint=args.checkpoint,
                      preset_name=args.preset, columns=columns(args))
    scores = "  ".join(f"{k} {result.metrics[k]:.4f}" for k in TABLE_METRICS[result.task]
                       if k in result.metrics)
    print(f"test: {scores}  (best epoch {result.best_epoch} of {args.epochs}, by valid {result.select})")
    if result.baseline is not None:
        method = f"xLSTM ({'from scratch' if args.preset or args.from_scratch else config.adapt})"
        print(f"side by side on the same {result.test_records:,} test records:")
        print(result.table(method))
    print(f"outputs: {result.out_dir} (predictions.csv, metrics.json, run.json, classifier/)")


def run_fitness_supervised(args: argparse.Namespace) -> None:
    """Refuse zero-shot options without a family, then run the split, the fine-tuning and the table."""
    from bioxlstm.errors import ConfigError
    from bioxlstm.tasks.fitness_supervised import SupervisedFitnessConfig, run_supervised_fitness

    for option, value in (("--num-homologs", args.num_homologs), ("--replicates", args.replicates)):
        if value is not None and (args.msa is None or args.no_zero_shot):
            raise ConfigError(f"{option} applies to the zero-shot score with --msa only")
    args.task, args.target_column = "regression", None
    baseline = args.baseline
    if baseline == "auto":  # per-position codes say nothing about positions never seen in training
        baseline = "onehot" if args.split == "random" else "kmer"
    select = "spearman" if args.select == "auto" else args.select
    config = SupervisedFitnessConfig(
        split=args.split, test_fraction=args.test_fraction, score_column=args.score_column,
        first_position=args.first_position, zero_shot=not args.no_zero_shot,
        num_homologs=args.num_homologs or 0, replicates=args.replicates or 1,
        finetune=finetune_config(args, baseline=baseline, select=select))
    result = run_supervised_fitness(args.checkpoint, args.dms, args.out, config, wild_type=args.wt,
                                    msa=args.msa)
    counts = result.counts
    print(f"{args.split} split: {counts['train']} train, {counts['test']} test variants"
          + (f" ({counts['left_out']} spanning both sides left out)" if counts["left_out"] else ""))
    print(result.table)
    print(f"outputs: {result.out_dir} (summary.json, data/, finetune/"
          + (", zero_shot.csv)" if config.zero_shot else ")"))
