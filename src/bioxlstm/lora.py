"""LoRA adapters on a language model's dense projections, through peft, saved in peft's format.

The blocks read their projection weights directly (`self.proj_up.weight` goes into a fused split
product), never calling the projection modules, so peft's usual LoRA layer, which adds its update
in `forward`, would be bypassed. The layer registered here (peft's experimental custom-module
hook) makes `weight` itself return W + (alpha / r) B A, so the update reaches every kernel that
reads the weight; its `forward` stays peft's (the same numbers). Targets: the up and down
projections of every mLSTM layer and gated FFN (`proj_up`, `proj_down`); q/k/v and the sLSTM
gates are block-diagonal (small per-head blocks), which a dense low-rank update would not keep.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bioxlstm.errors import CheckpointError, ConfigError
from bioxlstm.extras import require
from bioxlstm.io import atomic_write

LORA_TARGETS = ("proj_up", "proj_down")
ADAPTER_DIR = "adapter"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
WHAT = "LoRA fine-tuning (--adapt lora)"


@cache
def _weight_lora_linear() -> type:
    """peft's LoRA Linear whose `weight` carries the low-rank update (see the module doc)."""
    layer = require("peft.tuners.lora.layer", "downstream", WHAT)

    class WeightLoraLinear(layer.Linear):
        """A LoRA Linear read through its weight: W + scaling * B A for the active adapters."""

        @property
        def weight(self) -> torch.Tensor:
            """The base weight plus the active adapters' updates (the base alone when merged)."""
            weight = self.base_layer.weight
            if self.disable_adapters or self.merged:
                return weight
            for name in self.active_adapters:
                if name in self.lora_A:
                    weight = weight + self.get_delta_weight(name)
            return weight

    return WeightLoraLinear


def lora_config(rank: int, alpha: float, targets: tuple[str, ...] = LORA_TARGETS) -> Any:
    """A peft LoraConfig for `targets` (module names) with rank and alpha, no dropout."""
    peft = require("peft", "downstream", WHAT)
    return peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0)


def add_lora(model: nn.Module, config: Any) -> list[str]:
    """Inject LoRA adapters into `model` in place (everything else frozen); returns the adapted
    module names. Raises ConfigError when no module matches the targets."""
    peft = require("peft", "downstream", WHAT)
    config._register_custom_module({nn.Linear: _weight_lora_linear()})
    names = [n for n, m in model.named_modules() if n.split(".")[-1] in config.target_modules]
    if not names:
        raise ConfigError(f"--adapt lora: the model has no {' or '.join(config.target_modules)} "
                          f"modules to adapt")
    peft.inject_adapter_in_model(config, model)
    return names


def is_adapted(model: nn.Module) -> bool:
    """Whether `model` carries LoRA adapters."""
    return any(".lora_A." in name for name, _ in model.named_parameters())


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights without adapters, under the names of the unadapted model."""
    return {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items()
            if ".lora_" not in k}


def save_adapter(model: nn.Module, directory: str | Path) -> Path:
    """Write adapter_config.json and adapter_model.safetensors (peft's layout) into directory."""
    save_and_load = require("peft.utils.save_and_load", "downstream", WHAT)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.peft_config["default"].to_dict()
    config["target_modules"] = sorted(config["target_modules"])
    tensors = {k: v.detach().cpu().contiguous()
               for k, v in save_and_load.get_peft_model_state_dict(model).items()}
    atomic_write(directory / ADAPTER_WEIGHTS, lambda p: save_file(tensors, str(p)))
    atomic_write(directory / ADAPTER_CONFIG,
                 lambda p: p.write_text(json.dumps(config, indent=2, sort_keys=True, default=str)))
    return directory


def load_adapter(model: nn.Module, directory: str | Path) -> None:
    """Inject the adapters saved in `directory` into `model` and load their weights strictly."""
    peft = require("peft", "downstream", WHAT)
    save_and_load = require("peft.utils.save_and_load", "downstream", WHAT)
    directory = Path(directory)
    try:
        config = peft.LoraConfig.from_pretrained(str(directory))
        tensors = load_file(str(directory / ADAPTER_WEIGHTS))
    except (OSError, ValueError, TypeError) as err:
        raise CheckpointError(f"{directory}: cannot read the LoRA adapter ({err})") from None
    add_lora(model, config)
    result = save_and_load.set_peft_model_state_dict(model, tensors)
    expected = {k for k in model.state_dict() if ".lora_" in k}
    missing = [k for k in getattr(result, "missing_keys", []) if k in expected]
    if result.unexpected_keys or missing or not tensors:
        raise CheckpointError(f"{directory}: the adapter does not fit the model "
                              f"(unexpected {list(result.unexpected_keys)[:3]}, missing {missing[:3]})")
