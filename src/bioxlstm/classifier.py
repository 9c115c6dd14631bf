"""A sequence model for downstream tasks: language-model backbone, mean pooling over the bases (or
SMILES tokens), and a linear or MLP head with one output per class or target.

Tasks: classification (softmax over classes), multilabel (one sigmoid per 0/1 target) and
regression (one value per target, trained on standardised targets; `predict` undoes the scaling).
Saved as a directory: the backbone as a normal checkpoint (config.json + model.safetensors, so the
directory still loads as a language model; with LoRA the base weights, the adapter in adapter/ in
peft's layout), head.safetensors, and classifier.json with the output names (class id j is
classes[j]), the task, the head, the target scaling, the length limit used in training and whether
predictions are conjoined over both strands (post-hoc conjoining, docs/model.md, section 6).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from bioxlstm.checkpoint import save_pretrained
from bioxlstm.errors import CheckpointError
from bioxlstm.heads import build_head
from bioxlstm.io import atomic_write
from bioxlstm.lora import ADAPTER_DIR, base_state_dict, is_adapted, load_adapter, save_adapter
from bioxlstm.model import XLSTMLanguageModel
from bioxlstm.pooling import mean_pool, reverse_complement_rows

HEAD_FILE = "head.safetensors"
CLASSIFIER_FILE = "classifier.json"
TASK_KINDS = ("classification", "multilabel", "regression")


class SequenceClassifier(nn.Module):
    """outputs = head(mean over bases of backbone hidden states).

    With rc_conjoin (DNA), evaluation averages the outputs of x and RC(x) (post-hoc conjoining);
    training then sees each strand as it comes, with RC augmentation done by the caller.
    `target_scale` holds the (mean, sd) per regression target the head was trained against.
    """

    def __init__(self, backbone: XLSTMLanguageModel, classes: Sequence[str], max_length: int,
                 rc_conjoin: bool = False, task: str = "classification", head: str = "linear",
                 head_hidden: int | None = None,
                 target_scale: tuple[Sequence[float], Sequence[float]] | None = None) -> None:
        super().__init__()
        if task not in TASK_KINDS:
            raise ValueError(f"task must be one of {TASK_KINDS}, got {task!r}")
        self.backbone = backbone
        self.classes = list(classes)
        self.max_length = max_length
        self.rc_conjoin = rc_conjoin
        self.task, self.head_kind, self.head_hidden = task, head, head_hidden
        self.head = build_head(head, backbone.config.d_model, len(self.classes), head_hidden)
        mean, sd = target_scale or ([0.0] * len(self.classes), [1.0] * len(self.classes))
        self.register_buffer("target_mean", torch.tensor(list(mean), dtype=torch.float32), persistent=False)
        self.register_buffer("target_sd", torch.tensor(list(sd), dtype=torch.float32), persistent=False)

    def features(self, input_ids: Tensor, lengths: Tensor) -> Tensor:
        """Pooled backbone features (B, d) of `[separator] + tokens` rows, right-padded."""
        return mean_pool(self.backbone(input_ids, lengths=lengths).hidden, lengths)

    def forward(self, input_ids: Tensor, lengths: Tensor) -> Tensor:
        """Raw outputs (B, outputs): logits, or standardised values for regression; in eval mode
        with rc_conjoin, the mean over both strands."""
        out = self.head(self.features(input_ids, lengths))
        if self.rc_conjoin and not self.training:
            rc = self.head(self.features(reverse_complement_rows(input_ids, lengths), lengths))
            out = (out + rc) / 2
        return out

    def outputs_to_predictions(self, outputs: Tensor) -> Tensor:
        """Class probabilities (softmax), label probabilities (sigmoid) or target values."""
        outputs = outputs.float()
        if self.task == "classification":
            return outputs.softmax(-1)
        if self.task == "multilabel":
            return outputs.sigmoid()
        return outputs * self.target_sd + self.target_mean

    def predict(self, input_ids: Tensor, lengths: Tensor) -> Tensor:
        """Predictions in the data's terms (see outputs_to_predictions)."""
        return self.outputs_to_predictions(self(input_ids, lengths))

    def description(self) -> dict[str, Any]:
        """What classifier.json records."""
        return {"classes": self.classes, "max_length": self.max_length, "pooling": "mean",
                "rc_conjoin": self.rc_conjoin, "task": self.task, "head": self.head_kind,
                "head_hidden": self.head_hidden, "target_mean": self.target_mean.tolist(),
                "target_sd": self.target_sd.tolist(), "lora": is_adapted(self.backbone)}

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write backbone (base weights and adapter with LoRA), head and description."""
        directory = Path(directory)
        backbone = self.backbone
        if is_adapted(backbone):
            backbone = XLSTMLanguageModel(self.backbone.config)
            backbone.load_state_dict(base_state_dict(self.backbone))
            save_adapter(self.backbone, directory / ADAPTER_DIR)
        save_pretrained(backbone, directory, heads=("classifier",))
        head = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        atomic_write(directory / HEAD_FILE, lambda p: save_file(head, str(p)))
        text = json.dumps(self.description(), indent=2)
        atomic_write(directory / CLASSIFIER_FILE, lambda p: p.write_text(text))
        return directory


def load_classifier(directory: str | Path, map_location: str | torch.device = "cpu"
                    ) -> SequenceClassifier:
    """Load a classifier written by SequenceClassifier.save_pretrained (strictly, no pickle)."""
    directory = Path(directory)
    info_path = directory / CLASSIFIER_FILE
    try:
        info = json.loads(info_path.read_text())
        classes, max_length = list(info["classes"]), int(info["max_length"])
        scale = (info["target_mean"], info["target_sd"]) if "target_mean" in info else None
        settings = dict(rc_conjoin=bool(info.get("rc_conjoin", False)),
                        task=info.get("task", "classification"), head=info.get("head", "linear"),
                        head_hidden=info.get("head_hidden"), target_scale=scale)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{info_path}: not a readable classifier description ({err})") from None
    backbone = XLSTMLanguageModel.from_pretrained(directory, map_location=map_location)
    if info.get("lora"):
        load_adapter(backbone, directory / ADAPTER_DIR)
    try:
        model = SequenceClassifier(backbone, classes, max_length, **settings)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{info_path}: not a usable classifier description ({err})") from None
    model = model.to(map_location)
    try:
        model.head.load_state_dict(load_file(str(directory / HEAD_FILE), device=str(map_location)))
    except (OSError, SafetensorError, RuntimeError) as err:
        raise CheckpointError(f"{directory / HEAD_FILE}: cannot load the head ({err})") from None
    return model.eval()
