"""Training loop: AdamW with decay groups, LR schedule, bf16, exact resume; one process or many.

Under torchrun the trainer joins the process group itself (DDP by default, FSDP on request); every
rank draws the same global batch and trains on its share of the rows (see bioxlstm.distributed).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import platform
import random
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

from bioxlstm import distributed
from bioxlstm.allocator import retain_freed_memory
from bioxlstm.checkpoint import atomic_write, load_weights, save_pretrained
from bioxlstm.config import check_fields, read_config_file
from bioxlstm.data.batches import Batch, BatchSource, TokenWindows, eval_batches
from bioxlstm.errors import BioXLSTMError, CheckpointError, ConfigError
from bioxlstm.model import IGNORE_INDEX, loss_targets

SCHEDULES = ("cosine", "constant")


def bf16_is_slow(device: torch.device) -> bool:
    """Whether bfloat16 autocast on device lacks hardware support: a CPU without AVX512-BF16 or
    AMX (where torch cannot tell, assume it has them)."""
    if device.type != "cpu":
        return False
    probes = [getattr(torch.cpu, name, None)
              for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    probes = [probe for probe in probes if probe is not None]
    return bool(probes) and not any(probe() for probe in probes)


class NonFiniteLossError(BioXLSTMError, RuntimeError):
    """Training produced non-finite losses or gradients too many steps in a row."""

CHECKPOINT_DIR = "checkpoint"
HISTORY_DIR = "checkpoints"
STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
METRICS_FILE = "metrics.jsonl"
RUN_FILE = "run.json"


@dataclass
class TrainConfig:
    """Optimiser, schedule and loop settings of one run.

    batch_size is the global micro-batch: sequences per micro-step summed over all processes (each
    of N torchrun ranks trains on batch_size / N of them), so a run means the same at any world
    size. distributed picks DDP (replicated weights) or FSDP (sharded) when WORLD_SIZE > 1.
    bf16 runs forward and loss under bfloat16 autocast (float32 weights and optimiser state): on
    GPUs, and on CPUs with bfloat16 instructions (AVX512-BF16 or AMX), where it is faster.
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
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    max_bad_steps: int = 5  # non-finite losses/gradients in a row before the run stops
    keep_checkpoints: int = 1  # the latest in checkpoint/, older ones in checkpoints/step-N/
    tensorboard: bool = False  # also write scalars to run_dir/tensorboard (needs tensorboard)
    distributed: str = "ddp"

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
        for name in ("bf16", "progress", "activation_checkpointing", "tensorboard"):
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
        _require(self.distributed in distributed.STRATEGIES, "distributed",
                 f"one of {distributed.STRATEGIES}", self.distributed)

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


def resolve_device(name: str) -> torch.device:
    """The torch device for a config's `device`; 'auto' picks CUDA when present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) so a run is reproducible."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def dropout_seed(seed: int, step: int, micro: int, rank: int) -> int:
    """The torch seed of one rank's micro-batch: dropout differs across ranks and steps, and a
    resumed run draws the same masks as an uninterrupted one without saving any RNG state."""
    return int(np.random.SeedSequence([seed, step, micro, rank]).generate_state(1)[0])


def global_target_count(batch: Batch) -> int:
    """Tokens the loss is scored on in a whole (unsharded) batch; labels of -100 do not count."""
    targets = loss_targets(batch["input_ids"], batch.get("labels"), batch.get("objective", "clm"))
    return int((targets != IGNORE_INDEX).sum())


def lr_multiplier(config: TrainConfig, step: int) -> float:
    """Factor on config.lr for 0-based optimiser step `step`: linear warmup, then cosine or flat.

    Warmup reaches the full lr at its last step; cosine then falls to min_lr at the last step.
    """
    warmup = config.warmup
    if step < warmup:
        return (step + 1) / warmup
    if config.schedule == "constant":
        return 1.0
    peak = max(warmup - 1, 0)
    progress = min(1.0, (step - peak) / max(1, config.max_steps - 1 - peak))
    floor = config.min_lr / config.lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on matrices; none on biases, norm weights, embeddings, 1-D params."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            skip = param.dim() < 2 or "embedding" in name.lower()
            (no_decay if skip else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the model's decay groups with the config's lr and betas."""
    return torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.lr,
                             betas=config.betas)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> LambdaLR:
    """LambdaLR following `lr_multiplier`; its state is only the step count, so it saves as JSON."""
    return LambdaLR(optimizer, lambda step: lr_multiplier(config, step))


class _Window:
    """Loss, tokens and train-only wall time since the last logged record."""

    def __init__(self) -> None:
        self.loss = torch.zeros(())
        self.steps = 0
        self.tokens = 0
        self.start = time.perf_counter()

    def add(self, loss: Tensor, tokens: int) -> None:
        self.loss = self.loss.to(loss.device) + loss
        self.steps += 1
        self.tokens += tokens

    def summary(self) -> dict[str, float]:
        seconds = max(time.perf_counter() - self.start, 1e-9)
        loss = self.loss.item() / max(self.steps, 1)
        return {"loss": loss, "tokens_per_s": self.tokens / seconds}

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Leave the time spent inside (checkpointing) out of tokens/s."""
        began = time.perf_counter()
        yield
        self.start += time.perf_counter() - began


class Trainer:
    """Trains a model on a batch source; logs, evaluates and checkpoints into `run_dir`.

    The model provides `loss(**batch, reduction="mean" | "sum")`; training sums each rank's loss
    and divides by the whole batch's target count, so every target weighs the same at any world
    size. `valid_data` is a re-iterable of batches or a function returning a fresh iterable.
    `checkpoint_files` (name -> text) are written into every checkpoint beside the weights, e.g. a
    tokenizer the model cannot be used without.
    Resumed runs are bit-identical to uninterrupted ones on CPU; on GPU, as far as the kernels
    are deterministic. Under torchrun every rank builds the same Trainer; only rank 0 writes
    files and shows progress, and every rank resumes from the same checkpoint.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, train_data: BatchSource,
                 run_dir: str | Path,
                 valid_data: Iterable[Batch] | Callable[[], Iterable[Batch]] | None = None,
                 resume: bool = False, checkpoint_files: dict[str, str] | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.dist, self.device = distributed.setup(config.device)
        if config.batch_size % self.dist.world_size:
            raise ConfigError(f"train config field 'batch_size' ({config.batch_size}) must be a "
                              f"multiple of the number of processes ({self.dist.world_size})")
        self.model = model.to(self.device)
        if config.bf16 and bf16_is_slow(self.device):
            warnings.warn("bf16 is on, but this CPU has no bfloat16 instructions (AVX512-BF16 or "
                          "AMX): autocast will emulate them and likely run slower than float32",
                          stacklevel=2)
        if config.activation_checkpointing:
            if not hasattr(model, "gradient_checkpointing"):
                raise ConfigError("'activation_checkpointing' needs a model with gradient_checkpointing()")
            model.gradient_checkpointing(True)
        self.train_data = train_data
        self.valid_data = valid_data
        checkpoint = find_checkpoint(self.run_dir)
        if resume and checkpoint is None:
            raise CheckpointError(f"{self.run_dir}: no checkpoint to resume from")
        if not resume and ((self.run_dir / METRICS_FILE).exists() or checkpoint):
            raise ConfigError(f"'run_dir' {self.run_dir} already holds a run; pass "
                              "resume=True to continue it or choose a new directory")
        distributed.barrier(self.dist)  # no rank writes before every rank has checked run_dir
        self.fsdp = self.dist.distributed and config.distributed == "fsdp"
        self.net = distributed.wrap(self.model, config.distributed, self.dist, self.device)
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.step = 0
        self.tokens_seen = 0
        self.bad_steps = 0
        self.checkpoint_files = dict(checkpoint_files or {})
        self._board = _tensorboard_writer(self.run_dir) if config.tensorboard and self.dist.is_main \
            else None
        if resume:
            self.load_checkpoint(checkpoint)
            if self.dist.is_main:
                self._truncate_metrics()
        else:
            seed_everything(config.seed)
        if self.dist.is_main:
            self._write_run_info(resumed=resume)

    def train(self) -> dict[str, float]:
        """Run optimiser steps up to max_steps; returns the last logged record."""
        retain_freed_memory()
        cfg = self.config
        self.model.train()
        bar = tqdm(total=cfg.max_steps, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=None if cfg.progress and self.dist.is_main else True)
        window, record = _Window(), {}
        try:
            while self.step < cfg.max_steps:
                lr = self.optimizer.param_groups[0]["lr"]
                result = self._train_step()
                if result is None:
                    continue
                window.add(*result)
                bar.update(1)
                last = self.step == cfg.max_steps
                evaluate = cfg.eval_every > 0 and self.valid_data is not None and (
                    self.step % cfg.eval_every == 0 or last)
                if evaluate or last or self.step % cfg.log_every == 0:
                    record = {"step": self.step, **window.summary(), "lr": lr}
                    if evaluate:
                        record.update(self.evaluate())
                    self._log(record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}",
                                    tok_s=f"{record['tokens_per_s']:.0f}", refresh=False)
                    window = _Window()
                if last or (cfg.save_every > 0 and self.step % cfg.save_every == 0):
                    with window.paused():
                        self.save_checkpoint()
        finally:
            bar.close()
            if self._board is not None:
                self._board.flush()
        return record

    def _train_step(self) -> tuple[Tensor, int] | None:
        """One optimiser step over grad_accum_steps micro-batches; grads stay until the next.

        A non-finite loss or gradient skips the step (None) with a warning; max_bad_steps of them
        in a row stop the run with NonFiniteLossError. Each rank takes its rows of every global
        batch; the returned loss is the mean over ranks and the skip decision is shared.
        """
        accum, world = self.config.grad_accum_steps, self.dist.world_size
        self.optimizer.zero_grad(set_to_none=True)
        total, tokens = torch.zeros((), device=self.device), 0
        for micro in range(accum):
            batch = self.train_data.next_batch()
            tokens += batch["input_ids"].numel()
            targets = global_target_count(batch)
            batch = self._to_device(distributed.shard_rows(batch, self.dist))
            torch.manual_seed(dropout_seed(self.config.seed, self.step, micro, self.dist.rank))
            with distributed.gradient_sync(self.net, micro == accum - 1):
                with self._autocast():
                    # this rank's summed loss over the global batch's target count, times the
                    # world size that DDP's gradient averaging divides out: the exact global mean
                    loss = self.net(**batch, reduction="sum").float() * (world / targets / accum)
                loss.backward()
            total += loss.detach()
        norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_norm or math.inf)
        norm = distributed.full_value(norm).float()
        stats = torch.stack([total, (~torch.isfinite(norm)).float()])
        stats = distributed.all_reduce_sum(stats, self.dist)
        total = stats[0] / self.dist.world_size
        if not bool(torch.isfinite(total)) or bool(stats[1] > 0):
            self._skip_step(float(total), float(norm))
            return None
        self.bad_steps = 0
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self.tokens_seen += tokens
        return total, tokens

    def _skip_step(self, loss: float, norm: float) -> None:
        """Drop this step's gradients, warn and log it; stop after max_bad_steps in a row."""
        self.optimizer.zero_grad(set_to_none=True)
        self.bad_steps += 1
        message = (f"step {self.step + 1}: non-finite loss ({loss}) or gradient norm ({norm}); "
                   f"step skipped ({self.bad_steps} in a row)")
        if self.dist.is_main:
            tqdm.write(f"warning: {message}", file=sys.stderr)
        self._log({"step": self.step, "skipped": message})
        if self.bad_steps >= self.config.max_bad_steps:
            raise NonFiniteLossError(f"{self.bad_steps} steps in a row had a non-finite loss or "
                                     f"gradient; lower the learning rate, enable clip_norm or check "
                                     f"the data (the last checkpoint is in {self.run_dir})")

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss (mean over input tokens) and perplexity, in eval mode.

        Under torchrun each rank evaluates its rows of every batch and the sums are all-reduced.
        """
        if self.valid_data is None:
            raise ConfigError("evaluate() needs 'valid_data'")
        batches = self.valid_data() if callable(self.valid_data) else self.valid_data
        was_training = self.model.training
        self.model.eval()
        total, count = torch.zeros((), device=self.device), 0
        for batch in itertools.islice(batches, self.config.eval_batches):
            batch, counts = distributed.eval_rows(batch, self.dist)
            batch = self._to_device(batch)
            with self._autocast():
                loss = self.net(**batch).float()
            if counts:
                total += loss * batch["input_ids"].numel()
                count += batch["input_ids"].numel()
        self.model.train(was_training)
        if self.dist.distributed:
            sums = torch.stack([total.double(), total.new_tensor(count, dtype=torch.float64)])
            total, count = distributed.all_reduce_sum(sums, self.dist)
            count = int(count)
        if count == 0:
            raise ConfigError("'valid_data' yielded no batches")
        mean = total.item() / count
        return {"valid_loss": mean, "valid_ppl": math.exp(mean)}

    def save_checkpoint(self) -> Path:
        """Write weights and training state to run_dir/checkpoint, replacing it atomically.

        Every rank calls it (FSDP gathers the full weights and optimiser state); rank 0 writes,
        and no rank returns before the checkpoint is in place.
        """
        final = self.run_dir / CHECKPOINT_DIR
        weights = distributed.full_model_state(self.model) if self.fsdp else None
        state = self._training_state()
        if self.dist.is_main:
            self._write_checkpoint(final, weights, state)
        distributed.barrier(self.dist)
        return final

    def _write_checkpoint(self, final: Path, weights: dict[str, Tensor] | None,
                          state: dict[str, Any]) -> None:
        tmp = self.run_dir / f".{CHECKPOINT_DIR}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if weights is None:
            self.model.save_pretrained(tmp)
        else:
            save_pretrained(_Weights(self.model.config, weights), tmp)
        for name, text in self.checkpoint_files.items():
            atomic_write(tmp / name, lambda p, text=text: p.write_text(text))
        tensors: dict[str, Tensor] = {}
        meta = json.dumps(_flatten(state, tensors))
        atomic_write(tmp / STATE_TENSORS, lambda p: save_file(tensors, str(p)))
        atomic_write(tmp / STATE_JSON, lambda p: p.write_text(meta))
        _fsync_dir(tmp)
        old = final.with_name(f"{CHECKPOINT_DIR}.old")
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        _fsync_dir(self.run_dir)
        self._retire(old)

    def _retire(self, old: Path) -> None:
        """Keep a replaced checkpoint as checkpoints/step-N while keep_checkpoints allows, else drop it."""
        keep = self.config.keep_checkpoints - 1
        if keep > 0 and (old / STATE_JSON).is_file():
            step = json.loads((old / STATE_JSON).read_text())["step"]
            history = self.run_dir / HISTORY_DIR
            history.mkdir(exist_ok=True)
            target = history / f"step-{step:08d}"
            shutil.rmtree(target, ignore_errors=True)
            old.rename(target)
            for stale in sorted(history.glob("step-*"))[:-keep]:
                shutil.rmtree(stale)
            _fsync_dir(history)
        shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore weights, optimiser, scheduler, data position and RNG states from `path`."""
        path = Path(path)
        try:
            tensors = load_file(str(path / STATE_TENSORS))
            state = _unflatten(json.loads((path / STATE_JSON).read_text()), tensors)
            distributed.load_model_state(self.model, load_weights(path, self.device), self.fsdp)
            distributed.load_optimizer_state(self.model, self.optimizer, state["optimizer"],
                                             self.fsdp)
            self.scheduler.load_state_dict(state["scheduler"])
            self.train_data.load_state_dict(state["data"])
            _set_rng_state(state["rng"])
            self.step, self.tokens_seen = state["step"], state["tokens_seen"]
        except (OSError, KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as err:
            raise CheckpointError(f"{path}: cannot resume from this checkpoint ({err})") from None

    def _training_state(self) -> dict[str, Any]:
        return {"step": self.step, "tokens_seen": self.tokens_seen,
                "optimizer": distributed.full_optimizer_state(self.model, self.optimizer,
                                                              self.fsdp),
                "scheduler": self.scheduler.state_dict(),
                "data": self.train_data.state_dict(), "rng": _rng_state()}

    def _to_device(self, batch: Batch) -> Batch:
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, Tensor) else v
                for k, v in batch.items()}

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16)

    def _log(self, record: dict[str, float]) -> None:
        if not self.dist.is_main:
            return
        with open(self.run_dir / METRICS_FILE, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self._board is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._board.add_scalar(key, value, record["step"])

    def _truncate_metrics(self) -> None:
        """Drop records past the checkpoint, left by the interrupted run, before continuing."""
        path = self.run_dir / METRICS_FILE
        if not path.exists():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= self.step:
                    kept.append(line + "\n")
            except (ValueError, KeyError, TypeError):
                continue
        atomic_write(path, lambda p: p.write_text("".join(kept)))

    def _write_run_info(self, resumed: bool) -> None:
        path = self.run_dir / RUN_FILE
        resumes = []
        if resumed and path.exists():
            resumes = json.loads(path.read_text()).get("resumed_at_steps", [])
        model_config = getattr(self.model, "config", None)
        info = {"train_config": self.config.to_dict(),
                "model_config": model_config.to_dict() if model_config is not None else None,
                "data": describe() if (describe := getattr(self.train_data, "describe", None)) else None,
                "seed": self.config.seed, "device": str(self.device),
                "world_size": self.dist.world_size,
                "versions": _versions(),
                "resumed_at_steps": resumes + ([self.step] if resumed else [])}
        atomic_write(path, lambda p: p.write_text(json.dumps(info, indent=2)))


@dataclass(frozen=True)
class _Weights:
    """A model's config with gathered weights, in the shape save_pretrained reads."""

    config: Any
    weights: dict[str, Tensor]

    def state_dict(self) -> dict[str, Tensor]:
        return self.weights


def train_on_tokens(model: nn.Module, config: TrainConfig, train_tokens: Tensor, seq_len: int,
                    run_dir: str | Path, valid_tokens: Tensor | None = None,
                    resume: bool = False) -> Trainer:
    """Train on random windows of one token stream, validating on consecutive windows."""
    source = TokenWindows(train_tokens, seq_len, config.batch_size, seed=config.seed)
    valid = None
    if valid_tokens is not None:
        valid = functools.partial(eval_batches, valid_tokens, seq_len, config.batch_size,
                                  config.eval_batches)
        valid()  # checks the arguments now rather than at the first evaluation
    trainer = Trainer(model, config, source, run_dir, valid, resume=resume)
    trainer.train()
    return trainer


def _tensorboard_writer(run_dir: Path) -> Any:
    """A SummaryWriter into run_dir/tensorboard; ConfigError when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("'tensorboard: true' needs the tensorboard package "
                          "(pip install 'bioxlstm[tensorboard]')") from None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def find_checkpoint(run_dir: str | Path) -> Path | None:
    """The run's checkpoint dir, or the previous one if a save was cut off mid-swap; else None."""
    for name in (CHECKPOINT_DIR, f"{CHECKPOINT_DIR}.old"):
        if (Path(run_dir) / name / STATE_JSON).is_file():
            return Path(run_dir) / name
    return None


def _versions() -> dict[str, str]:
    try:
        bioxlstm_version = metadata.version("bioxlstm")
    except metadata.PackageNotFoundError:
        bioxlstm_version = "unknown"
    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "bioxlstm": bioxlstm_version}


def _fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _flatten(obj: Any, tensors: dict[str, Tensor]) -> Any:
    """JSON-ready copy of a state dict; tensors move into `tensors` (saved as safetensors)."""
    if isinstance(obj, Tensor):
        key = str(len(tensors))
        tensors[key] = obj.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _flatten(v, tensors) for k, v in obj.items()}
        return {"__items__": [[_flatten(k, tensors), _flatten(v, tensors)]
                              for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_flatten(v, tensors) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(f"cannot store a {type(obj).__name__} in the training state")


def _unflatten(obj: Any, tensors: dict[str, Tensor]) -> Any:
    """Inverse of `_flatten`."""
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__tuple__" in obj:
        return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in obj["__items__"]}
    return {k: _unflatten(v, tensors) for k, v in obj.items()}
