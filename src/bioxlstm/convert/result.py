"""What a conversion produces, and the shapes a bioxlstm model of a given config expects."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bioxlstm.config import ModelConfig
from bioxlstm.convert.sources import OfficialSource
from bioxlstm.smiles import SmilesTokenizer

# the commits of the official repositories whose code the conversion reproduces (docs/pretrained.md)
VERIFIED_AGAINST = {"dna": "ml-jku/DNA-xLSTM@06820ec", "prot": "ml-jku/Prot-xLSTM@5aa8ddf",
                    "chem": "ml-jku/Chem-xLSTM@9cf7b7f"}


@dataclass
class Converted:
    """A bioxlstm config (with its provenance in `source`), state dict and, for SMILES, tokenizer."""

    config: ModelConfig
    state_dict: dict[str, Tensor]
    tokenizer: SmilesTokenizer | None = None


def expected_shapes(config: ModelConfig) -> dict[str, torch.Size]:
    """Every state-dict key of a bioxlstm model of `config` with its shape, built on the meta device."""
    from bioxlstm.model import XLSTMLanguageModel

    with torch.device("meta"):
        model = XLSTMLanguageModel(config)
    return {key: t.shape for key, t in model.state_dict().items()}


def with_source(config: ModelConfig, source: OfficialSource, official_config: dict[str, Any],
                config_from: str, **details: Any) -> ModelConfig:
    """`config` recording where it came from: family, file, where its config was read and the
    official config itself (config.json also records the bioxlstm version that wrote it)."""
    record = {"family": source.family, "format": source.name, "file": source.weights.name,
              "config_from": config_from, "verified_against": VERIFIED_AGAINST[source.family],
              **details,
              "official_config": json_safe(official_config)}
    return dataclasses.replace(config, source=record)


def json_safe(value: Any) -> Any:
    """Plain JSON data: mapping keys as strings (DNA complement maps have int keys), tuples as lists."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)

