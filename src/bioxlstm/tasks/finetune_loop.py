"""The fine-tuning loop: masked losses per task, epochs with the best one restored, predictions.

Inputs come from one of two sources. A trained backbone (full fine-tuning, LoRA) runs on token
batches, with reverse-complement augmentation when conjoining strands. A frozen backbone runs once:
its pooled features (both strands' when conjoining) are computed up front and the head trains on
them, which gives the same numbers as running the backbone every epoch, at a fraction of the cost.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from bioxlstm.classifier import SequenceClassifier
from bioxlstm.data.labelled import LabelledData
from bioxlstm.metrics import LOWER_IS_BETTER, task_metrics
from bioxlstm.pooling import reverse_complement_rows
from bioxlstm.tasks.inputs import pad_batch
from bioxlstm.train import build_optimizer, build_scheduler
from bioxlstm.vocabulary import Vocabulary


def task_loss(model: SequenceClassifier, outputs: Tensor, labels: Tensor) -> Tensor:
    """Mean loss over the known targets of a batch (0 with a gradient when none is known):
    cross-entropy, per-label binary cross-entropy, or squared error of standardised targets."""
    outputs = outputs.float()
    if model.task == "classification":
        known = labels >= 0
        if not known.any():
            return outputs.sum() * 0.0
        return F.cross_entropy(outputs[known], labels[known])
    known = ~torch.isnan(labels)
    if not known.any():
        return outputs.sum() * 0.0
    if model.task == "multilabel":
        return F.binary_cross_entropy_with_logits(outputs[known], labels[known].float())
    scaled = (labels.float() - model.target_mean) / model.target_sd
    return F.mse_loss(outputs[known], scaled[known])


class TokenSource:
    """Outputs of the whole model on token batches of a data set."""

    def __init__(self, data: LabelledData, vocabulary: Vocabulary, device: torch.device) -> None:
        self.data, self.vocabulary, self.device = data, vocabulary, device

    def outputs(self, model: SequenceClassifier, batch: list[int],
                generator: torch.Generator | None) -> Tensor:
        """Model outputs of the records in `batch`; with a generator (training) and a conjoined
        model, each record is reverse-complemented with probability 0.5."""
        ids, lengths = pad_batch([self.data.tokens[j] for j in batch], self.vocabulary, self.device)
        if generator is not None and model.rc_conjoin:
            flip = (torch.rand(len(batch), generator=generator) < 0.5).to(self.device)
            ids = torch.where(flip[:, None], reverse_complement_rows(ids, lengths), ids)
        return model(ids, lengths)


class FeatureSource:
    """Head outputs on pooled features computed once by a frozen backbone."""

    def __init__(self, model: SequenceClassifier, data: LabelledData, vocabulary: Vocabulary,
                 batch_size: int, device: torch.device) -> None:
        self.forward = _pooled(model, data, vocabulary, batch_size, device, rc=False)
        self.reverse = (_pooled(model, data, vocabulary, batch_size, device, rc=True)
                        if model.rc_conjoin else None)

    def outputs(self, model: SequenceClassifier, batch: list[int],
                generator: torch.Generator | None) -> Tensor:
        """Head outputs; conjoined models draw a strand per record in training and average both
        strands' outputs otherwise, as the model does on tokens."""
        index = torch.as_tensor(batch, device=self.forward.device)
        features = self.forward[index]
        if self.reverse is None:
            return model.head(features)
        if generator is not None:
            flip = (torch.rand(len(batch), generator=generator) < 0.5).to(features.device)
            return model.head(torch.where(flip[:, None], self.reverse[index], features))
        return (model.head(features) + model.head(self.reverse[index])) / 2


@torch.no_grad()
def _pooled(model: SequenceClassifier, data: LabelledData, vocabulary: Vocabulary, batch_size: int,
            device: torch.device, rc: bool) -> Tensor:
    """Pooled backbone features (N, d) of every record (reverse-complemented with rc)."""
    model.backbone.eval()
    rows = []
    for j in range(0, len(data), batch_size):
        ids, lengths = pad_batch(data.tokens[j:j + batch_size], vocabulary, device)
        if rc:
            ids = reverse_complement_rows(ids, lengths)
        rows.append(model.features(ids, lengths))
    return torch.cat(rows)


Source = TokenSource | FeatureSource


@torch.no_grad()
def predict(model: SequenceClassifier, source: Source, n: int, batch_size: int) -> np.ndarray:
    """Predictions (N, outputs) in eval mode: probabilities, or values in the targets' units."""
    model.eval()
    rows = [model.outputs_to_predictions(source.outputs(model, list(range(j, min(j + batch_size, n))),
                                                        None)).cpu()
            for j in range(0, n, batch_size)]
    return torch.cat(rows).numpy()


def _better(score: float, best: float | None, select: str) -> bool:
    """Whether a validation score beats the best so far (lower for RMSE; an undefined score never
    beats a defined one)."""
    if math.isnan(score):
        return best is None
    if best is None or math.isnan(best):
        return True
    return score < best if select in LOWER_IS_BETTER else score > best


def fit(model: SequenceClassifier, sources: dict[str, Source], splits: dict[str, LabelledData],
        config: Any, device: torch.device) -> tuple[int, list[dict[str, float]]]:
    """Train for config.epochs, then restore the epoch best on the valid split by config.select;
    returns that epoch and the per-epoch history."""
    train = splits["train"]
    steps = config.epochs * math.ceil(len(train) / config.batch_size)
    optimizer = build_optimizer(model, config.train_config(steps))
    scheduler = build_scheduler(optimizer, config.train_config(steps))
    generator = torch.Generator().manual_seed(config.seed)
    history, best, best_epoch, best_state = [], None, 0, None
    for epoch in range(1, config.epochs + 1):
        step = _step(model, optimizer, scheduler, config.clip_norm)
        loss = train_epoch(model, sources["train"], train, step, config, generator, epoch, device)
        valid = splits["valid"]
        scores = task_metrics(train.task, valid.labels,
                              predict(model, sources["valid"], len(valid), config.batch_size),
                              train.classes)
        history.append({"epoch": epoch, "train_loss": loss,
                        **{f"valid_{k}": v for k, v in scores.items()}})
        improved = _better(scores[config.select], best, config.select)
        if improved:
            best, best_epoch = scores[config.select], epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        tqdm.write(f"bioxlstm: epoch {epoch}/{config.epochs}: train loss {loss:.4f}, valid "
                   f"{config.select} {scores[config.select]:.4f}"
                   + (" (best so far)" if improved else f" (best: epoch {best_epoch})"),
                   file=sys.stderr)
    model.load_state_dict(best_state)
    return best_epoch, history


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
          clip_norm: float | None) -> Callable[[Tensor], None]:
    """One optimiser step from a loss: backward, clipping, step, schedule."""
    params = [p for p in model.parameters() if p.requires_grad]

    def step(loss: Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm is not None:
            nn.utils.clip_grad_norm_(params, clip_norm)
        optimizer.step()
        scheduler.step()

    return step


def train_epoch(model: SequenceClassifier, source: Source, data: LabelledData,
                step: Callable[[Tensor], None], config: Any, generator: torch.Generator,
                epoch: int, device: torch.device) -> float:
    """One pass over shuffled training batches; returns the mean training loss."""
    model.train()
    if config.adapt != "full":
        model.backbone.eval()  # no dropout in a frozen or adapted backbone
    order = torch.randperm(len(data), generator=generator).tolist()
    batches = [order[j:j + config.batch_size] for j in range(0, len(order), config.batch_size)]
    labels = torch.as_tensor(data.labels, device=device)
    total = 0.0
    bar = tqdm(batches, desc=f"epoch {epoch}/{config.epochs}", unit="batch", dynamic_ncols=True,
               disable=None if config.progress else True, leave=False)
    for batch in bar:
        loss = task_loss(model, source.outputs(model, batch, generator), labels[batch])
        step(loss)
        total += loss.item() * len(batch)
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    return total / len(data)
