"""Checkpoints as a directory: config.json + model.safetensors; atomic writes, strict loads.

The layout is huggingface_hub's (ModelHubMixin): a directory saved here can be pushed to the Hub
as is, and a Hub repository or a local copy of one loads through the same strict reader.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from bioxlstm.config import ModelConfig
from bioxlstm.errors import CheckpointError
from bioxlstm.io import atomic_write, read_json
from bioxlstm.model_card import model_card
from bioxlstm.smiles import TOKENIZER_FILE
from bioxlstm.version import __version__
from bioxlstm.vocabulary import vocabulary_file

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
HEADS_KEY = "trained_heads"
META_KEYS = ("model_type", "bioxlstm_version", HEADS_KEY)


def save_pretrained(model: nn.Module, directory: str | Path, heads: tuple[str, ...] = ("lm",),
                    training: dict[str, Any] | None = None) -> Path:
    """Write the model's config, weights, (for a fixed alphabet) vocabulary and model card.

    `heads` records which output heads were trained with these weights ("lm", "classifier"), so
    commands that read the language-model head can refuse a classifier's backbone.
    """
    directory = Path(directory)
    config = {"model_type": "bioxlstm", "bioxlstm_version": __version__, HEADS_KEY: list(heads),
              **model.config.to_dict()}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_FILE,
                 lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    atomic_write(directory / CONFIG_FILE,
                 lambda p: p.write_text(json.dumps(config, indent=2, sort_keys=True)))
    for name, text in vocabulary_file(model.config).items():
        atomic_write(directory / name, lambda p, text=text: p.write_text(text))
    parameters = sum(t.numel() for t in tensors.values())
    card = model_card(model.config, parameters, tuple(heads), training)
    atomic_write(directory / CARD_FILE, lambda p: p.write_text(card))
    return directory


def require_lm_head(directory: str | Path, what: str) -> None:
    """Refuse a checkpoint whose language-model head was not trained with its weights (a
    fine-tuned classifier's backbone), for `what` needs the model's next-token predictions."""
    path = Path(directory) / CONFIG_FILE
    try:
        heads = json.loads(path.read_text()).get(HEADS_KEY, ["lm"])
    except (OSError, ValueError, AttributeError):
        return  # load_config reports an unreadable config
    if "lm" not in heads:
        raise CheckpointError(f"{directory} holds a fine-tuned {', '.join(heads)}: its language-model "
                              f"head was not trained with these weights, so {what} would be "
                              f"meaningless; use the language-model checkpoint it was fine-tuned from")


def load_config(directory: str | Path) -> ModelConfig:
    """Read and validate config.json of a checkpoint directory."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file (is {directory} a bioxlstm checkpoint?)")
    data = read_json(path, CheckpointError, "JSON config")
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    for key in META_KEYS:
        data.pop(key, None)
    try:
        return ModelConfig.from_dict(data)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None


def load_weights(directory: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read model.safetensors; a truncated or foreign file raises CheckpointError naming it."""
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        return load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: truncated or not a safetensors file ({err})") from None


def hub_snapshot(
    model_id: str,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Path:
    """The local directory holding a Hub repository's config.json and model.safetensors.

    Files already in the Hugging Face cache are used without network when local_files_only is set
    or HF_HUB_OFFLINE=1; anything that cannot be found or fetched raises CheckpointError.
    """
    from huggingface_hub import hf_hub_download

    def fetch(name: str) -> Path:
        return Path(hf_hub_download(model_id, name, revision=revision, cache_dir=cache_dir,
                                    force_download=force_download, token=token,
                                    local_files_only=local_files_only))

    try:
        directory = fetch(CONFIG_FILE).parent
        fetch(WEIGHTS_FILE)
    except Exception as err:  # huggingface_hub raises many types: validation, HTTP, offline, cache
        raise CheckpointError(f"{model_id}: not a checkpoint directory, and not available from the "
                              f"Hugging Face Hub or its cache ({type(err).__name__}: {err})") from None
    try:
        fetch(TOKENIZER_FILE)  # a learned (SMILES) vocabulary; fixed alphabets do not need it
    except Exception:  # absent from older repositories: the config's alphabet is used
        pass
    return directory


def load_pretrained(
    cls: type[nn.Module], directory: str | Path, map_location: str | torch.device = "cpu"
) -> nn.Module:
    """Build the model from config.json and load every weight strictly."""
    config = load_config(directory)
    weights = load_weights(directory, map_location)
    model = cls(config).to(map_location)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:3]) or first[0]
        raise CheckpointError(f"{Path(directory) / WEIGHTS_FILE}: weights do not match "
                              f"config.json: {detail}") from None
    return model
