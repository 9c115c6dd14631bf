"""Downstream learning: a backbone with mean pooling and a head, trained for classification
(binary, multi-class, multilabel) or regression on DNA, protein or SMILES inputs (docs/downstream.md).

Three ways to adapt the backbone: `full` fine-tuning, `frozen` (a linear probe or small MLP on
pooled features) and `lora` (peft adapters on the dense projections). A share of the training set
is held out to pick the best epoch; the test set is a file or a seeded split of the training file.
A linear baseline (k-mer counts, one-hot codes or Morgan fingerprints) is fitted on the same splits
and tested on the same records. Outputs in `out_dir`: predictions.csv (and baseline_predictions.csv),
metrics.json, run.json and classifier/ (load it with `load_classifier`).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bioxlstm.baselines.linear import (
    BASELINES,
    BaselineSpec,
    check_available,
    fit_baseline,
    resolve_baseline,
)
from bioxlstm.checkpoint import load_config
from bioxlstm.classifier import SequenceClassifier
from bioxlstm.config import TrainConfig, preset
from bioxlstm.data.labelled import Columns, LabelledData
from bioxlstm.data.targets import TASKS
from bioxlstm.devices import resolve_device
from bioxlstm.errors import ConfigError
from bioxlstm.extras import require
from bioxlstm.heads import HEADS
from bioxlstm.io import check_output_dir
from bioxlstm.lora import LORA_TARGETS, add_lora, lora_config
from bioxlstm.metrics import metric_names, task_metrics
from bioxlstm.model import XLSTMLanguageModel
from bioxlstm.tasks.finetune_data import read_splits, target_scale, truncate
from bioxlstm.tasks.finetune_loop import FeatureSource, TokenSource, fit, predict
from bioxlstm.tasks.finetune_report import metrics_table, write_json, write_predictions
from bioxlstm.train import seed_everything
from bioxlstm.train_state import versions
from bioxlstm.vocabulary import Vocabulary, vocabulary_for

ADAPT = ("full", "frozen", "lora")
SELECTION_METRICS = ("auto", "accuracy", "mcc", "f1", "macro_f1", "auroc",
                     "spearman", "pearson", "r2", "rmse")
DEFAULT_SELECT = {"classification": "accuracy", "multilabel": "auroc", "regression": "r2"}
CLASSIFIER_DIR = "classifier"


@dataclass
class FinetuneConfig:
    """Fine-tuning settings; the optimiser is AdamW (0.9, 0.95) with warmup then cosine decay.

    `freeze_backbone` is the older name of adapt='frozen'. `select` 'auto' picks the epoch by
    accuracy (classification), AUROC (multilabel) or R2 (regression). `baseline` 'auto' is k-mer
    counts for DNA and proteins, Morgan fingerprints for SMILES; `kmer` its k (default per alphabet).
    `from_scratch` trains a checkpoint's architecture from a fresh (seeded) initialisation: the
    from-scratch control with the same model and vocabulary as the pretrained one.
    """

    epochs: int = 10
    lr: float = 1e-3
    min_lr: float = 0.0
    weight_decay: float = 0.1
    warmup_fraction: float = 0.1
    batch_size: int = 32
    clip_norm: float | None = 1.0
    max_length: int | None = None
    freeze_backbone: bool = False
    rc_conjoin: bool = False  # DNA: train with RC augmentation (p 0.5), predict on both strands
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    select: str = "auto"
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    task: str = "auto"
    adapt: str = "full"
    head: str = "linear"
    head_hidden: int | None = None
    lora_rank: int = 8
    lora_alpha: float = 16.0
    baseline: str = "auto"
    kmer: int | None = None
    from_scratch: bool = False  # with a checkpoint: its architecture and vocabulary, fresh weights

    def __post_init__(self) -> None:
        if self.freeze_backbone:
            if self.adapt == "lora":
                raise ConfigError("--freeze-backbone means --adapt frozen; it cannot go with --adapt lora")
            self.adapt = "frozen"
        self.freeze_backbone = self.adapt == "frozen"
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field (optimiser fields checked by TrainConfig)."""
        for name in ("epochs", "batch_size", "lora_rank"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"finetune field '{name}' must be a positive integer, got {value!r}")
        for name in ("max_length", "head_hidden", "kmer"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"finetune field '{name}' must be a positive integer, got {value!r}")
        for name in ("valid_fraction", "test_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ConfigError(f"finetune field '{name}' must be in (0, 1), got {getattr(self, name)!r}")
        for name, allowed in (("select", SELECTION_METRICS), ("task", TASKS), ("adapt", ADAPT),
                              ("head", HEADS), ("baseline", BASELINES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"finetune field '{name}' must be one of {allowed}, "
                                  f"got {getattr(self, name)!r}")
        if self.head_hidden is not None and self.head != "mlp":
            raise ConfigError("--head-hidden applies to --head mlp only")
        if not self.lora_alpha > 0:
            raise ConfigError(f"finetune field 'lora_alpha' must be positive, got {self.lora_alpha!r}")
        self.train_config(1)

    def train_config(self, steps: int) -> TrainConfig:
        """The optimiser and schedule part, as the pretraining loop's config for `steps` steps."""
        return TrainConfig(lr=self.lr, min_lr=self.min_lr, weight_decay=self.weight_decay,
                           warmup_fraction=self.warmup_fraction, max_steps=steps,
                           batch_size=self.batch_size, clip_norm=self.clip_norm, seed=self.seed,
                           device=self.device, progress=self.progress)


@dataclass
class FinetuneResult:
    """Test metrics, the epoch chosen on the validation split, per-epoch history, the task, the
    parameter counts and (when one ran) the baseline's name and test metrics."""

    metrics: dict[str, float]
    best_epoch: int
    history: list[dict[str, float]]
    out_dir: Path
    test_source: str
    task: str = "classification"
    select: str = "accuracy"
    parameters: dict[str, int] = field(default_factory=dict)
    baseline: dict[str, Any] | None = None
    test_records: int = 0

    def table(self, method: str = "xLSTM") -> str:
        """The model's and the baseline's test metrics side by side."""
        rows = [(method, self.metrics)]
        if self.baseline is not None:
            rows.append((self.baseline["method"], self.baseline["test"]))
        return metrics_table(self.task, rows)


def finetune(train: str | Path, out_dir: str | Path, config: FinetuneConfig | None = None,
             test: str | Path | None = None, checkpoint: str | Path | None = None,
             preset_name: str | None = None, columns: Columns | None = None) -> FinetuneResult:
    """Fine-tune a pretrained checkpoint (or train a fresh preset) on a labelled file; see module doc."""
    config, columns, out_dir = config or FinetuneConfig(), columns or Columns(), Path(out_dir)
    if (checkpoint is None) == (preset_name is None):
        raise ConfigError("give exactly one of a checkpoint (pretrained backbone) or a preset "
                          "(a from-scratch baseline)")
    if (out_dir / "run.json").exists():
        raise ConfigError(f"{out_dir} already holds a fine-tuning run; choose a new output directory")
    check_output_dir(out_dir, "--out")
    seed_everything(config.seed)
    device = resolve_device(config.device)
    backbone = _backbone(checkpoint, preset_name, config.from_scratch)
    vocabulary = vocabulary_for(backbone.config, checkpoint)
    baseline = _check_options(config, vocabulary, preset_name)
    splits, test_source, notes = read_splits(train, test, vocabulary, columns, config.task,
                                             config.valid_fraction, config.test_fraction, config.seed)
    config = dataclasses.replace(config, select=_selection(config.select, splits["train"]))
    print("\n".join(notes), file=sys.stderr)
    max_length = config.max_length or backbone.config.context_length - 1
    truncate(list(splits.values()), max_length)
    model = _build_model(backbone, splits["train"], max_length, config).to(device)
    sources = {name: (FeatureSource(model, data, vocabulary, config.batch_size, device)
                      if config.adapt == "frozen" else TokenSource(data, vocabulary, device))
               for name, data in splits.items()}
    best_epoch, history = fit(model, sources, splits, config, device)
    test_data = splits["test"]
    predictions = predict(model, sources["test"], len(test_data), config.batch_size)
    metrics = task_metrics(test_data.task, test_data.labels, predictions, test_data.classes)
    baseline_result = _baseline(baseline, splits, vocabulary, config, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir / CLASSIFIER_DIR)
    write_predictions(out_dir / "predictions.csv", test_data, predictions)
    parameters = _parameter_counts(model)
    result = FinetuneResult(metrics, best_epoch, history, out_dir, test_source, test_data.task,
                            config.select, parameters, baseline_result, len(test_data))
    write_json(out_dir / "metrics.json", {
        "test": metrics, "best_epoch": best_epoch, "selected_by": f"valid_{config.select}",
        "task": test_data.task, "parameters": parameters, "baseline": baseline_result,
        "history": history})
    write_json(out_dir / "run.json", _run_record(config, train, test_source, checkpoint, preset_name,
                                                 backbone, model, splits, baseline))
    return result


def baseline_only(train: str | Path, out_dir: str | Path, vocabulary: Vocabulary,
                  config: FinetuneConfig | None = None, test: str | Path | None = None,
                  columns: Columns | None = None) -> dict[str, Any]:
    """Fit and test only the baseline, on the splits `finetune` would make with this config (for
    suites, where the baseline is a method of its own). Writes baseline_predictions.csv and
    metrics.json into out_dir; returns the baseline's record (method, setting, test metrics)."""
    config, columns, out_dir = config or FinetuneConfig(), columns or Columns(), Path(out_dir)
    spec = resolve_baseline(config.baseline, vocabulary, config.kmer)
    if spec is None:
        raise ConfigError("baseline_only needs a baseline, not --baseline none")
    check_available(spec)
    check_output_dir(out_dir, "--out")
    splits, _, _ = read_splits(train, test, vocabulary, columns, config.task, config.valid_fraction,
                               config.test_fraction, config.seed)
    config = dataclasses.replace(config, select=_selection(config.select, splits["train"]))
    record = _baseline(spec, splits, vocabulary, config, out_dir)
    write_json(out_dir / "metrics.json", {"baseline": record, "task": splits["test"].task,
                                          "finetune_config": dataclasses.asdict(config),
                                          "versions": versions()})
    return record


def _backbone(checkpoint: str | Path | None, preset_name: str | None,
              from_scratch: bool) -> XLSTMLanguageModel:
    """The pretrained model, or a fresh one of a preset or of the checkpoint's architecture."""
    if from_scratch and checkpoint is None:
        raise ConfigError("--from-scratch takes the architecture of a --checkpoint; a --preset is "
                          "trained from scratch already")
    if checkpoint is None:
        config = preset(preset_name)
        if config.alphabet is not None and config.alphabet.lower() == "smiles":
            raise ConfigError(f"--preset {preset_name} has no SMILES vocabulary yet; pretrain one "
                              "(bioxlstm pretrain --smiles FILE --preset ...), then pass its "
                              "checkpoint with --from-scratch for fresh weights")
        return XLSTMLanguageModel(config)
    if from_scratch:
        return XLSTMLanguageModel(load_config(checkpoint))
    return XLSTMLanguageModel.from_pretrained(checkpoint)


def _check_options(config: FinetuneConfig, vocabulary: Vocabulary, preset_name: str | None
                   ) -> BaselineSpec | None:
    """Refuse options that do not apply to this model (naming the option); the baseline to run."""
    if config.rc_conjoin and vocabulary.complement_ids() is None:
        raise ConfigError("--rc-conjoin needs a model whose alphabet has a complement (DNA)")
    if config.adapt != "full" and (preset_name is not None or config.from_scratch):
        source = "--preset" if preset_name is not None else "--from-scratch model"
        raise ConfigError(f"--adapt {config.adapt} adapts a pretrained backbone; a {source} is "
                          f"trained from scratch, so it takes --adapt full")
    if config.adapt == "lora":
        require("peft", "downstream", "LoRA fine-tuning (--adapt lora)")
    baseline = resolve_baseline(config.baseline, vocabulary, config.kmer)
    if baseline is not None:
        check_available(baseline)
    return baseline


def _selection(select: str, train: LabelledData) -> str:
    """The validation metric that picks the epoch: the task's default for 'auto'; refuses one the
    task does not report."""
    if select == "auto":
        return DEFAULT_SELECT[train.task]
    valid = metric_names(train.task, len(train.classes))
    if select not in valid:
        raise ConfigError(f"--select {select} does not apply to {train.task} "
                          f"(choose from {', '.join(valid)})")
    return select


def _build_model(backbone: XLSTMLanguageModel, train: LabelledData, max_length: int,
                 config: FinetuneConfig) -> SequenceClassifier:
    """The classifier with the chosen head, its parameters set trainable per config.adapt; the
    backbone's language-model head, unused here, stays as it was."""
    model = SequenceClassifier(backbone, train.classes, max_length, config.rc_conjoin, train.task,
                               config.head, config.head_hidden, target_scale(train))
    if config.adapt == "frozen":
        backbone.requires_grad_(False)
    elif config.adapt == "lora":
        adapted = add_lora(backbone, lora_config(config.lora_rank, config.lora_alpha))
        print(f"bioxlstm: LoRA rank {config.lora_rank}, alpha {config.lora_alpha:g} on "
              f"{len(adapted)} modules ({', '.join(LORA_TARGETS)})", file=sys.stderr)
    backbone.head.requires_grad_(False)
    counts = _parameter_counts(model)
    print(f"bioxlstm: {counts['trainable']:,} of {counts['total']:,} parameters trainable "
          f"({100 * counts['trainable'] / counts['total']:.2f}%, adapt {config.adapt}, "
          f"{config.head} head)", file=sys.stderr)
    return model


def _parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Trainable and total parameters of the whole classifier."""
    return {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total": sum(p.numel() for p in model.parameters())}


def _baseline(spec: BaselineSpec | None, splits: dict[str, LabelledData], vocabulary: Vocabulary,
              config: FinetuneConfig, out_dir: Path) -> dict[str, Any] | None:
    """Fit the baseline on the same splits, write its predictions; its name, setting and metrics."""
    if spec is None:
        return None
    fitted = fit_baseline(spec, splits["train"], splits["valid"], splits["test"], vocabulary,
                          config.select, config.seed)
    test = splits["test"]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(out_dir / "baseline_predictions.csv", test, fitted.predictions)
    return {"method": fitted.name, "kind": spec.kind, "k": spec.k,
            "regularisation": fitted.setting, f"valid_{config.select}": fitted.valid_score,
            "test": task_metrics(test.task, test.labels, fitted.predictions, test.classes)}


def _run_record(config: FinetuneConfig, train: str | Path, test_source: str,
                checkpoint: str | Path | None, preset_name: str | None,
                backbone: XLSTMLanguageModel, model: SequenceClassifier,
                splits: dict[str, LabelledData], baseline: BaselineSpec | None) -> dict[str, Any]:
    """What run.json records: settings, seed, data, model, task, classes and library versions."""
    return {"finetune_config": dataclasses.asdict(config), "seed": config.seed,
            "device": str(next(model.parameters()).device), "train": str(train), "test": test_source,
            "checkpoint": None if checkpoint is None else str(checkpoint), "preset": preset_name,
            "model_config": backbone.config.to_dict(), "task": model.task,
            "targets": splits["train"].targets, "classes": model.classes,
            "lora_targets": list(LORA_TARGETS) if config.adapt == "lora" else None,
            "baseline": None if baseline is None else dataclasses.asdict(baseline),
            "max_length": model.max_length, "records": {k: len(v) for k, v in splits.items()},
            "versions": versions()}
