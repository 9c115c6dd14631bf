"""A sequence classifier: language-model backbone, mean pooling over the bases, linear head.

Saved as a directory: the backbone as a normal checkpoint (config.json + model.safetensors, so the
directory still loads as a language model), head.safetensors, and classifier.json with the class
names (class id j is classes[j]), the length limit used in training and whether predictions are
conjoined over both strands (post-hoc conjoining, docs/model.md, section 6).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from bioxlstm.checkpoint import save_pretrained
from bioxlstm.errors import CheckpointError
from bioxlstm.io import atomic_write
from bioxlstm.model import XLSTMLanguageModel
from bioxlstm.pooling import mean_pool, reverse_complement_rows

HEAD_FILE = "head.safetensors"
CLASSIFIER_FILE = "classifier.json"


class SequenceClassifier(nn.Module):
    """logits = head(mean over bases of backbone hidden states).

    With rc_conjoin (DNA), evaluation averages the logits of x and RC(x) (post-hoc conjoining);
    training then sees each strand as it comes, with RC augmentation done by the caller.
    """

    def __init__(self, backbone: XLSTMLanguageModel, classes: list[str], max_length: int,
                 rc_conjoin: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.classes = list(classes)
        self.max_length = max_length
        self.rc_conjoin = rc_conjoin
        self.head = nn.Linear(backbone.config.d_model, len(classes))

    def features(self, input_ids: Tensor, lengths: Tensor) -> Tensor:
        """Pooled backbone features (B, d) of `[separator] + bases` rows, right-padded."""
        return mean_pool(self.backbone(input_ids, lengths=lengths).hidden, lengths)

    def forward(self, input_ids: Tensor, lengths: Tensor) -> Tensor:
        """Class logits (B, num_classes); in eval mode with rc_conjoin, the mean over both strands."""
        logits = self.head(self.features(input_ids, lengths))
        if self.rc_conjoin and not self.training:
            rc = self.head(self.features(reverse_complement_rows(input_ids, lengths), lengths))
            logits = (logits + rc) / 2
        return logits

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write backbone, head and class names into `directory`."""
        directory = Path(directory)
        save_pretrained(self.backbone, directory, heads=("classifier",))
        head = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        atomic_write(directory / HEAD_FILE, lambda p: save_file(head, str(p)))
        info = {"classes": self.classes, "max_length": self.max_length, "pooling": "mean",
                "rc_conjoin": self.rc_conjoin}
        atomic_write(directory / CLASSIFIER_FILE, lambda p: p.write_text(json.dumps(info, indent=2)))
        return directory


def load_classifier(directory: str | Path, map_location: str | torch.device = "cpu"
                    ) -> SequenceClassifier:
    """Load a classifier written by SequenceClassifier.save_pretrained (strictly, no pickle)."""
    directory = Path(directory)
    info_path = directory / CLASSIFIER_FILE
    try:
        info = json.loads(info_path.read_text())
        classes, max_length = list(info["classes"]), int(info["max_length"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{info_path}: not a readable classifier description ({err})") from None
    backbone = XLSTMLanguageModel.from_pretrained(directory, map_location=map_location)
    model = SequenceClassifier(backbone, classes, max_length, bool(info.get("rc_conjoin", False)))
    model = model.to(map_location)
    try:
        model.head.load_state_dict(load_file(str(directory / HEAD_FILE), device=str(map_location)))
    except (OSError, SafetensorError, RuntimeError) as err:
        raise CheckpointError(f"{directory / HEAD_FILE}: cannot load the head ({err})") from None
    return model.eval()
