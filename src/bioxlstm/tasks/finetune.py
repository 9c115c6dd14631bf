"""Sequence classification: a backbone fine-tuned with mean pooling and a linear head (docs/model.md §6).

10% of the training set is held out (stratified, seeded) to pick the best epoch; the test set is a
file or, without one, a seeded split of the training file. Outputs in `out_dir`: predictions.csv,
metrics.json, run.json and classifier/ (load it with `load_classifier`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bioxlstm.alphabets import Alphabet
from bioxlstm.classifier import SequenceClassifier
from bioxlstm.config import TrainConfig, preset
from bioxlstm.data.labelled import Columns, LabelledData, holdout_split, read_labelled
from bioxlstm.devices import resolve_device
from bioxlstm.errors import ConfigError
from bioxlstm.io import atomic_write, check_output_dir
from bioxlstm.metrics import classification_metrics
from bioxlstm.model import XLSTMLanguageModel
from bioxlstm.pooling import reverse_complement_rows
from bioxlstm.tasks.inputs import pad_batch
from bioxlstm.train import build_optimizer, build_scheduler, seed_everything
from bioxlstm.train_state import versions
from bioxlstm.vocabulary import vocabulary_for

SELECTION_METRICS = ("accuracy", "mcc")
CLASSIFIER_DIR = "classifier"


@dataclass
class FinetuneConfig:
    """Fine-tuning settings; the optimiser is AdamW (0.9, 0.95) with warmup then cosine decay."""

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
    select: str = "accuracy"
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field (optimiser fields checked by TrainConfig)."""
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"finetune field '{name}' must be a positive integer, got {value!r}")
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 1):
            raise ConfigError(f"finetune field 'max_length' must be a positive integer, "
                              f"got {self.max_length!r}")
        for name in ("valid_fraction", "test_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ConfigError(f"finetune field '{name}' must be in (0, 1), got {getattr(self, name)!r}")
        if self.select not in SELECTION_METRICS:
            raise ConfigError(f"finetune field 'select' must be one of {SELECTION_METRICS}, "
                              f"got {self.select!r}")
        self.train_config(1)

    def train_config(self, steps: int) -> TrainConfig:
        """The optimiser and schedule part, as the pretraining loop's config for `steps` steps."""
        return TrainConfig(lr=self.lr, min_lr=self.min_lr, weight_decay=self.weight_decay,
                           warmup_fraction=self.warmup_fraction, max_steps=steps,
                           batch_size=self.batch_size, clip_norm=self.clip_norm, seed=self.seed,
                           device=self.device, progress=self.progress)


@dataclass
class FinetuneResult:
    """Test metrics, the epoch chosen on the validation split, and per-epoch history."""

    metrics: dict[str, float]
    best_epoch: int
    history: list[dict[str, float]]
    out_dir: Path
    test_source: str


def finetune(train: str | Path, out_dir: str | Path, config: FinetuneConfig | None = None,
             test: str | Path | None = None, checkpoint: str | Path | None = None,
             preset_name: str | None = None, columns: Columns | None = None) -> FinetuneResult:
    """Fine-tune a pretrained checkpoint (or train a fresh preset) as a classifier; see module doc."""
    config, columns, out_dir = config or FinetuneConfig(), columns or Columns(), Path(out_dir)
    if (checkpoint is None) == (preset_name is None):
        raise ConfigError("give exactly one of a checkpoint (pretrained backbone) or a preset "
                          "(a from-scratch baseline)")
    if (out_dir / "run.json").exists():
        raise ConfigError(f"{out_dir} already holds a fine-tuning run; choose a new output directory")
    check_output_dir(out_dir, "--out")
    seed_everything(config.seed)
    device = resolve_device(config.device)
    backbone = (XLSTMLanguageModel.from_pretrained(checkpoint) if checkpoint is not None
                else XLSTMLanguageModel(preset(preset_name)))
    splits, test_source = _splits(train, test, vocabulary_for(backbone.config, checkpoint), columns, config)
    max_length = config.max_length or backbone.config.context_length - 1
    _truncate(list(splits.values()), max_length)
    if config.rc_conjoin and vocabulary_for(backbone.config, checkpoint).complement_ids() is None:
        raise ConfigError("finetune field 'rc_conjoin' needs a model whose alphabet has a complement "
                          "(DNA)")
    model = SequenceClassifier(backbone, splits["train"].classes, max_length,
                               config.rc_conjoin).to(device)
    best_epoch, history = _fit(model, splits["train"], splits["valid"], config, device)
    probs = _predict(model, splits["test"], config, device)
    metrics = classification_metrics(splits["test"].labels, probs.argmax(1), len(model.classes))

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir / CLASSIFIER_DIR)
    _write_predictions(out_dir / "predictions.csv", splits["test"], probs)
    _write_json(out_dir / "metrics.json", {"test": metrics, "best_epoch": best_epoch,
                                           "selected_by": f"valid_{config.select}",
                                           "history": history})
    _write_json(out_dir / "run.json", {
        "finetune_config": dataclasses.asdict(config), "seed": config.seed, "device": str(device),
        "train": str(train), "test": test_source,
        "checkpoint": None if checkpoint is None else str(checkpoint), "preset": preset_name,
        "model_config": backbone.config.to_dict(), "classes": model.classes,
        "max_length": max_length, "records": {k: len(v) for k, v in splits.items()},
        "versions": versions()})
    return FinetuneResult(metrics, best_epoch, history, out_dir, test_source)


def _splits(train: str | Path, test: str | Path | None, alphabet: Alphabet, columns: Columns,
            config: FinetuneConfig) -> tuple[dict[str, LabelledData], str]:
    """train / valid / test sets and where the test set came from (its file, or a seeded split)."""
    train_data = read_labelled(train, alphabet, columns)
    if test is not None:
        test_data, test_source = read_labelled(test, alphabet, columns, train_data.classes), str(test)
    else:
        keep, held = holdout_split(train_data.labels, config.test_fraction, config.seed)
        train_data, test_data = train_data.subset(keep), train_data.subset(held)
        test_source = f"seeded {config.test_fraction:.0%} split of {train}"
        print(f"no test file: testing on a {test_source} ({len(test_data)} records)", file=sys.stderr)
    keep, held = holdout_split(train_data.labels, config.valid_fraction, config.seed + 1)
    return {"train": train_data.subset(keep), "valid": train_data.subset(held),
            "test": test_data}, test_source


def _fit(model: SequenceClassifier, train: LabelledData, valid: LabelledData,
         config: FinetuneConfig, device: torch.device) -> tuple[int, list[dict[str, float]]]:
    """Train for config.epochs, then restore the epoch best on `valid`; returns it and the history."""
    if config.freeze_backbone:
        model.backbone.requires_grad_(False)
    train_config = config.train_config(config.epochs * math.ceil(len(train) / config.batch_size))
    optimizer = build_optimizer(model, train_config)
    scheduler = build_scheduler(optimizer, train_config)
    generator = torch.Generator().manual_seed(config.seed)
    history, best, best_epoch, best_state = [], None, 0, None
    for epoch in range(1, config.epochs + 1):
        loss = _train_epoch(model, train, optimizer, scheduler, config, generator, epoch, device)
        scores = classification_metrics(valid.labels, _predict(model, valid, config, device).argmax(1),
                                        len(model.classes))
        history.append({"epoch": epoch, "train_loss": loss,
                        **{f"valid_{k}": v for k, v in scores.items()}})
        improved = best is None or scores[config.select] > best
        if improved:
            best, best_epoch = scores[config.select], epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        tqdm.write(f"bioxlstm: epoch {epoch}/{config.epochs}: train loss {loss:.4f}, valid "
                   f"{config.select} {scores[config.select]:.4f}"
                   + (" (best so far)" if improved else f" (best: epoch {best_epoch})"),
                   file=sys.stderr)
    model.load_state_dict(best_state)
    return best_epoch, history


def _truncate(datasets: list[LabelledData], max_length: int) -> None:
    """Cut sequences to max_length bases, with one warning that counts them."""
    cut = total = 0
    for data in datasets:
        for j, tokens in enumerate(data.tokens):
            if len(tokens) > max_length:
                data.tokens[j] = tokens[:max_length]
                cut += 1
        total += len(data)
    if cut:
        print(f"warning: {cut} of {total} sequences are longer than {max_length} bases and were "
              f"truncated (see --max-length)", file=sys.stderr)


def _train_epoch(model: SequenceClassifier, data: LabelledData, optimizer: torch.optim.Optimizer,
                 scheduler: Any, config: FinetuneConfig, generator: torch.Generator, epoch: int,
                 device: torch.device) -> float:
    """One pass over shuffled training batches; returns the mean training loss."""
    model.train()
    if config.freeze_backbone:
        model.backbone.eval()
    order = torch.randperm(len(data), generator=generator).tolist()
    batches = [order[j:j + config.batch_size] for j in range(0, len(order), config.batch_size)]
    total, alphabet = 0.0, vocabulary_for(model.backbone.config)
    bar = tqdm(batches, desc=f"epoch {epoch}/{config.epochs}", unit="batch", dynamic_ncols=True,
               disable=None if config.progress else True, leave=False)
    for batch in bar:
        ids, lengths = pad_batch([data.tokens[j] for j in batch], alphabet, device)
        labels = torch.as_tensor(data.labels[batch], device=device)
        if model.rc_conjoin:
            flip = (torch.rand(len(batch), generator=generator) < 0.5).to(device)
            ids = torch.where(flip[:, None], reverse_complement_rows(ids, lengths), ids)
        with torch.set_grad_enabled(not config.freeze_backbone):
            features = model.features(ids, lengths)
        loss = F.cross_entropy(model.head(features), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.clip_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
        optimizer.step()
        scheduler.step()
        total += loss.item() * len(batch)
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    return total / len(data)


@torch.no_grad()
def _predict(model: SequenceClassifier, data: LabelledData, config: FinetuneConfig,
             device: torch.device) -> np.ndarray:
    """Class probabilities (N, K) in eval mode."""
    model.eval()
    alphabet = vocabulary_for(model.backbone.config)
    probs = []
    for j in range(0, len(data), config.batch_size):
        ids, lengths = pad_batch(data.tokens[j:j + config.batch_size], alphabet, device)
        probs.append(model(ids, lengths).float().softmax(-1).cpu())
    return torch.cat(probs).numpy()


def _write_predictions(path: Path, data: LabelledData, probs: np.ndarray) -> None:
    """index, id, label, predicted (class names) and one probability column per class."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["index", "id", "label", "predicted",
                          *(f"prob_{name}" for name in data.classes)])
            for j, (name, label, row) in enumerate(zip(data.ids, data.labels, probs)):
                out.writerow([j, name, data.classes[label], data.classes[int(row.argmax())],
                              *(f"{p:.6g}" for p in row)])
    atomic_write(path, write)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2)))
