"""Training configuration: optimiser, schedule, checkpointing and loop settings, validated by field."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bioxlstm.config.files import check_fields, read_config_file
from bioxlstm.errors import ConfigError

SCHEDULES = ("cosine", "constant")
STRATEGIES = ("ddp", "fsdp")
# settings that do not change what a run computes: a resumed run may use other values
MAY_CHANGE_ON_RESUME = frozenset({
    "max_steps", "device", "progress", "log_every", "eval_every", "eval_batches", "save_every",
    "save_every_minutes", "keep_checkpoints", "tensorboard", "max_bad_steps",
    "activation_checkpointing", "distributed", "compile"})


@dataclass
class TrainConfig:
    """Optimiser, schedule and loop settings of one run.

    batch_size is the global micro-batch: sequences per micro-step summed over all processes (each
    of N torchrun ranks trains on batch_size / N of them), so a run means the same at any world
    size. distributed picks DDP (replicated weights) or FSDP (sharded) when WORLD_SIZE > 1.
    bf16 runs forward and loss under bfloat16 autocast (float32 weights and optimiser state): on
    GPUs, and on CPUs with bfloat16 instructions (AVX512-BF16 or AMX), where it is faster.
    compile runs the training loss through torch.compile (CPU and GPU): the same maths, a first
    step that takes tens of seconds to compile, faster steps afterwards where the compiler fuses
    the element-wise work; a resumed run may turn it on or off.
    """

    lr: float = 1e-3
    min_lr: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    warmup_steps: int = 0
    warmup_fraction: float | None = None
    schedule: str = "cosine"
    max_steps: int = 1000
    batch_size: int = 8
    grad_accum_steps: int = 1
    clip_norm: float | None = 1.0
    bf16: bool = False
    activation_checkpointing: bool = False
    eval_every: int = 0
    eval_batches: int = 20
    save_every: int = 0
    save_every_minutes: float = 10.0
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    max_bad_steps: int = 5  # non-finite losses/gradients in a row before the run stops
    keep_checkpoints: int = 1  # the latest in checkpoint/, older ones in checkpoints/step-N/
    tensorboard: bool = False  # also write scalars to run_dir/tensorboard (needs tensorboard)
    distributed: str = "ddp"
    compile: bool = False  # torch.compile the training loss (see the class docstring)

    def __post_init__(self) -> None:
        if isinstance(self.betas, list):
            self.betas = tuple(self.betas)
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field."""
        for name in ("max_steps", "batch_size", "grad_accum_steps", "eval_batches", "log_every",
                     "max_bad_steps", "keep_checkpoints"):
            _require(_is_int(getattr(self, name)) and getattr(self, name) >= 1, name,
                     "a positive integer", getattr(self, name))
        for name in ("warmup_steps", "eval_every", "save_every"):
            _require(_is_int(getattr(self, name)) and getattr(self, name) >= 0, name,
                     "a non-negative integer", getattr(self, name))
        _require(_is_int(self.seed) and 0 <= self.seed < 2**32, "seed",
                 "an integer in [0, 2**32)", self.seed)
        _require(_is_number(self.lr) and self.lr > 0, "lr", "a positive number", self.lr)
        _require(_is_number(self.save_every_minutes) and self.save_every_minutes >= 0,
                 "save_every_minutes", "a non-negative number (0: no timed checkpoints)",
                 self.save_every_minutes)
        _require(_is_number(self.min_lr) and 0 <= self.min_lr <= self.lr, "min_lr",
                 "a number in [0, lr]", self.min_lr)
        _require(_is_number(self.weight_decay) and self.weight_decay >= 0, "weight_decay",
                 "a non-negative number", self.weight_decay)
        _require(isinstance(self.betas, tuple) and len(self.betas) == 2
                 and all(_is_number(b) and 0 <= b < 1 for b in self.betas), "betas",
                 "two numbers in [0, 1)", self.betas)
        _require(self.clip_norm is None or (_is_number(self.clip_norm) and self.clip_norm > 0),
                 "clip_norm", "a positive number or null", self.clip_norm)
        _require(self.schedule in SCHEDULES, "schedule", f"one of {SCHEDULES}", self.schedule)
        for name in ("bf16", "progress", "activation_checkpointing", "tensorboard", "compile"):
            _require(isinstance(getattr(self, name), bool), name, "true or false",
                     getattr(self, name))
        fraction = self.warmup_fraction
        _require(fraction is None or (_is_number(fraction) and 0 <= fraction <= 1),
                 "warmup_fraction", "a number in [0, 1] or null", fraction)
        _require(fraction is None or self.warmup_steps == 0, "warmup_fraction",
                 "null when warmup_steps is set", fraction)
        _require(self.warmup <= self.max_steps, "warmup_steps", "at most max_steps",
                 self.warmup)
        _require(isinstance(self.device, str) and _is_device(self.device), "device",
                 "'auto' or a torch device such as 'cpu' or 'cuda:0'", self.device)
        _require(self.distributed in STRATEGIES, "distributed", f"one of {STRATEGIES}",
                 self.distributed)

    @property
    def warmup(self) -> int:
        """Warmup length in optimiser steps, from warmup_steps or warmup_fraction."""
        if self.warmup_fraction is None:
            return self.warmup_steps
        return round(self.warmup_fraction * self.max_steps)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-ready fields (betas as a list)."""
        return {**dataclasses.asdict(self), "betas": list(self.betas)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a mapping, rejecting unknown fields by name."""
        check_fields(cls, data, "train")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Load from YAML or JSON; a top-level `train:` section is used when present."""
        return cls.from_dict(read_config_file(path, "train"))

    def resume_conflicts(self, saved: TrainConfig) -> list[str]:
        """Fields that differ from a run's saved config and may not change when resuming it."""
        return [f"{name} (run: {getattr(saved, name)!r}, now: {getattr(self, name)!r})"
                for name in (f.name for f in dataclasses.fields(self))
                if name not in MAY_CHANGE_ON_RESUME and getattr(self, name) != getattr(saved, name)]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_device(name: str) -> bool:
    if name == "auto":
        return True
    try:
        torch.device(name)
    except RuntimeError:
        return False
    return True


def _require(ok: bool, name: str, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"train config field '{name}' must be {rule}, got {value!r}")
