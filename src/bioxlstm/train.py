"""Training loop: AdamW with decay groups, LR schedule, bf16, safe checkpoints, exact resume.

Under torchrun the trainer joins the process group itself (DDP by default, FSDP on request); every
rank draws the same global batch and trains on its share of the rows (see bioxlstm.distributed).
The run directory's checkpoint protocol is in bioxlstm.run_dir; the settings in bioxlstm.config.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import random
import shlex
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

from bioxlstm import distributed
from bioxlstm.alphabets import IGNORE_INDEX
from bioxlstm.checkpoint import load_config, load_weights, save_pretrained
from bioxlstm.config import TrainConfig
from bioxlstm.data.batches import Batch, BatchSource, TokenWindows, eval_batches
from bioxlstm.errors import BioXLSTMError, CheckpointError, ConfigError
from bioxlstm.io import OutputError, RunLock, atomic_write, check_output_dir
from bioxlstm.model import loss_targets
from bioxlstm.run_dir import (
    CHECKPOINT_DIR,
    METRICS_FILE,
    RUN_FILE,
    holds_run,
    is_empty_or_missing,
    newest_checkpoint,
    replace_checkpoint,
    settle,
)
from bioxlstm.train_state import load_state, rng_state, save_state, set_rng_state, versions


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




class TrainingInterrupted(BioXLSTMError):
    """A run stopped by SIGINT or SIGTERM after saving a checkpoint it can resume from."""

    def __init__(self, reason: str, step: int, checkpoint: Path) -> None:
        super().__init__(f"stopped by {reason} at step {step}; checkpoint saved in {checkpoint}")
        self.reason, self.step, self.checkpoint = reason, step, checkpoint


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


@contextmanager
def _writing(run_dir: Path) -> Iterator[None]:
    """Report a failed write into the run directory (disk full, read-only) in one line."""
    try:
        yield
    except OSError as err:
        raise OutputError(f"cannot write into run directory {run_dir}: {err.strerror or err}") from None


def _notice(line: str) -> None:
    tqdm.write(f"bioxlstm: {line}", file=sys.stderr)


class Trainer:
    """Trains a model on a batch source; logs, evaluates and checkpoints into `run_dir`.

    The model provides `loss(**batch, reduction="mean" | "sum")`; training sums each rank's loss
    and divides by the whole batch's target count, so every target weighs the same at any world
    size. `valid_data` is a re-iterable of batches or a function returning a fresh iterable.
    `checkpoint_files` (name -> text) are written into every checkpoint beside the weights, e.g. a
    tokenizer the model cannot be used without; `run_files` once into run_dir (e.g. a data split).

    One process trains in a run directory at a time (an fcntl lock, released when train() ends or
    the process dies). Checkpoints are saved every `save_every` steps, every `save_every_minutes`,
    at the end, and on SIGINT/SIGTERM, which finish the current step, save and raise
    TrainingInterrupted. With resume=True the run continues from its newest complete checkpoint,
    or starts at step 0 (saying so) if it has none yet; settings that change what the run computes
    must equal the run's (`TrainConfig.resume_conflicts`). Resumed runs are bit-identical to
    uninterrupted ones on CPU; on GPU, as far as the kernels are deterministic. Under torchrun
    every rank builds the same Trainer; only rank 0 writes files and shows progress.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, train_data: BatchSource,
                 run_dir: str | Path,
                 valid_data: Iterable[Batch] | Callable[[], Iterable[Batch]] | None = None,
                 resume: bool = False, checkpoint_files: dict[str, str] | None = None,
                 run_files: dict[str, str] | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.dist, self.device = distributed.setup(config.device)
        if config.batch_size % self.dist.world_size:
            raise ConfigError(f"train config field 'batch_size' ({config.batch_size}) must be a "
                              f"multiple of the number of processes ({self.dist.world_size})")
        self._lock = self._claim_run_dir()
        try:
            self._setup(model, train_data, valid_data, resume, checkpoint_files)
            if self.dist.is_main:
                with _writing(self.run_dir):
                    for name, text in (run_files or {}).items():
                        atomic_write(self.run_dir / name, lambda p, text=text: p.write_text(text))
        except BaseException:
            self.release()
            raise

    def _setup(self, model: nn.Module, train_data: BatchSource,
               valid_data: Iterable[Batch] | Callable[[], Iterable[Batch]] | None, resume: bool,
               checkpoint_files: dict[str, str] | None) -> None:
        config = self.config
        checkpoint = self._checkpoint_to_resume(resume)
        self.model = model.to(self.device)
        if config.bf16 and bf16_is_slow(self.device):
            warnings.warn("bf16 is on, but this CPU has no bfloat16 instructions (AVX512-BF16 or "
                          "AMX): autocast will emulate them and likely run slower than float32",
                          stacklevel=3)
        if config.activation_checkpointing:
            if not hasattr(model, "gradient_checkpointing"):
                raise ConfigError("'activation_checkpointing' needs a model with gradient_checkpointing()")
            model.gradient_checkpointing(True)
        self.train_data = train_data
        self.valid_data = valid_data
        self.fsdp = self.dist.distributed and config.distributed == "fsdp"
        self.net = distributed.wrap(self.model, config.distributed, self.dist, self.device)
        # the training call's module: compiled with `compile`; DDP's no_sync and evaluation keep
        # the eager module (evaluation is rare, and compiling it too would cost another compile)
        self.loss_net = torch.compile(self.net) if config.compile else self.net
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.step = 0
        self.tokens_seen = 0
        self.bad_steps = 0
        self.checkpoint_files = dict(checkpoint_files or {})
        self._stop_signal: str | None = None
        self._last_valid: tuple[float | None, int] = (None, 0)
        self._stop = self._save_due = False
        self._last_save = time.monotonic()
        self._board = _tensorboard_writer(self.run_dir) if config.tensorboard and self.dist.is_main \
            else None
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)
            if self.dist.is_main:
                self._truncate_metrics()
        else:
            seed_everything(config.seed)
        if self.dist.is_main:
            self._write_run_info(resumed=checkpoint is not None)

    def _claim_run_dir(self) -> RunLock | None:
        """Create run_dir and take its lock on rank 0; if that fails, every rank fails."""
        lock, error = None, None
        if self.dist.is_main:
            try:
                check_output_dir(self.run_dir, "run directory")
                lock = RunLock(self.run_dir)
            except BioXLSTMError as err:
                error = err
        flag = torch.tensor([float(error is not None)], device=self.device)
        failed = bool(distributed.all_reduce_sum(flag, self.dist)[0] > 0)
        if error is not None:
            raise error
        if failed:
            raise OutputError(f"rank 0 could not open run directory {self.run_dir}")
        return lock

    def _checkpoint_to_resume(self, resume: bool) -> Path | None:
        """The checkpoint to continue from, or None to start at step 0; refuses a used or foreign
        directory (see the class docstring). Crash leftovers are settled first."""
        if self.dist.is_main:
            with _writing(self.run_dir):
                settle(self.run_dir)
        distributed.barrier(self.dist)
        found = newest_checkpoint(self.run_dir)
        if not resume and holds_run(self.run_dir):
            at = f" (last checkpoint at step {found[1]})" if found else ""
            raise ConfigError(f"run directory {self.run_dir} already holds a run{at}; resume it "
                              "(--resume, or resume=True) or choose a new directory")
        if not resume or found is not None:
            return None if found is None else found[0]
        if (self.run_dir / CHECKPOINT_DIR).exists():
            raise CheckpointError(f"{self.run_dir / CHECKPOINT_DIR} is incomplete (files missing or "
                                  "cut short) and no other complete checkpoint exists; move it "
                                  "away to start the run again")
        if not (holds_run(self.run_dir) or is_empty_or_missing(self.run_dir)):
            raise ConfigError(f"{self.run_dir} is not a bioxlstm run directory (no {RUN_FILE}, "
                              "metrics or checkpoint): nothing to resume")
        distributed.barrier(self.dist)
        if self.dist.is_main:
            _notice(f"{self.run_dir} has no complete checkpoint yet: starting the run at step 0")
            (self.run_dir / METRICS_FILE).unlink(missing_ok=True)
        return None

    def release(self) -> None:
        """Give up the run directory's lock (train() does this when it returns or fails)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def train(self) -> dict[str, float]:
        """Run optimiser steps up to max_steps; returns the last logged record.

        SIGINT or SIGTERM finish the current step, save a checkpoint and raise TrainingInterrupted;
        a second Ctrl-C stops at once.
        """
        cfg = self.config
        self.model.train()
        bar = tqdm(total=cfg.max_steps, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=None if cfg.progress and self.dist.is_main else True)
        window, record = _Window(), {}
        self._last_save = time.monotonic()
        try:
            with self._signals_stop_training():
                while self.step < cfg.max_steps:
                    lr = self.optimizer.param_groups[0]["lr"]
                    result = self._train_step()
                    if result is not None:
                        window.add(*result)
                        bar.update(1)
                    if result is not None or self._stop:
                        window, record = self._maybe_log(window, lr, bar, record)
                    if self._stop:
                        raise TrainingInterrupted(self._stop_signal or "a signal to another process",
                                                  self.step, self.save_checkpoint())
                    if self._save_now(result is not None):
                        with window.paused():
                            self.save_checkpoint()
        finally:
            bar.close()
            if self._board is not None:
                self._board.flush()
            self.release()
        return record

    def _maybe_log(self, window: _Window, lr: float, bar: tqdm,
                   record: dict[str, float]) -> tuple[_Window, dict[str, float]]:
        """Log (and validate) when due; returns the window to go on with and the last record."""
        cfg = self.config
        last = self.step == cfg.max_steps
        evaluate = cfg.eval_every > 0 and self.valid_data is not None and not self._stop and (
            self.step % cfg.eval_every == 0 or last)
        if not (evaluate or last or self._stop or self.step % cfg.log_every == 0) or not window.steps:
            return window, record
        record = {"step": self.step, **window.summary(), "lr": lr}
        if evaluate:
            record.update(self.evaluate())
            self._last_valid = (record["valid_loss"], self.step)
        self._log(record)
        bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}",
                        refresh=False)
        return _Window(), record

    def _save_now(self, stepped: bool) -> bool:
        """Whether a checkpoint is due: at the end, every save_every steps, or save_every_minutes."""
        cfg = self.config
        by_step = stepped and cfg.save_every > 0 and self.step % cfg.save_every == 0
        return (stepped and self.step == cfg.max_steps) or by_step or self._save_due

    @contextmanager
    def _signals_stop_training(self) -> Iterator[None]:
        """While training, SIGINT/SIGTERM ask for a checkpoint and a stop after the current step;
        a second SIGINT raises KeyboardInterrupt at once. Only in the main thread."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handle(signum: int, frame: object) -> None:
            if self._stop_signal is not None:
                if signum == signal.SIGINT:
                    raise KeyboardInterrupt
                return
            self._stop_signal = signal.Signals(signum).name
            if self.dist.is_main:
                sys.stderr.write(f"\nbioxlstm: {self._stop_signal}: finishing step {self.step + 1}, "
                                 "then saving a checkpoint (Ctrl-C again stops at once, unsaved)\n")

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _train_step(self) -> tuple[Tensor, int] | None:
        """One optimiser step over grad_accum_steps micro-batches; grads stay until the next.

        A non-finite loss or gradient skips the step (None) with a warning; max_bad_steps of them
        in a row stop the run with NonFiniteLossError. Each rank takes its rows of every global
        batch; the returned loss is the mean over ranks, and the skip, stop and timed-checkpoint
        decisions are shared by all ranks.
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
                    loss = self.loss_net(**batch, reduction="sum").float() * (world / targets / accum)
                loss.backward()
            total += loss.detach()
        norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_norm or math.inf)
        norm = distributed.full_value(norm).float()
        minutes = self.config.save_every_minutes
        due = minutes > 0 and time.monotonic() - self._last_save >= 60 * minutes
        stats = torch.stack([total, (~torch.isfinite(norm)).float(),
                             total.new_tensor(float(self._stop_signal is not None)),
                             total.new_tensor(float(due))])
        stats = distributed.all_reduce_sum(stats, self.dist)
        self._stop, self._save_due = bool(stats[2] > 0), bool(stats[3] > 0)
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
        """Write weights and training state as run_dir/checkpoint, replacing the last one safely.

        Every rank calls it (FSDP gathers the full weights and optimiser state); rank 0 writes,
        and no rank returns before the checkpoint is in place. The replaced checkpoint stays
        complete on disk until the new one is (bioxlstm.run_dir).
        """
        weights = distributed.full_model_state(self.model) if self.fsdp else None
        state = self._training_state()
        if self.dist.is_main:
            with _writing(self.run_dir):
                replace_checkpoint(self.run_dir, self.step,
                                   lambda directory: self._fill_checkpoint(directory, weights, state),
                                   self.config.keep_checkpoints)
        distributed.barrier(self.dist)
        self._last_save = time.monotonic()
        return self.run_dir / CHECKPOINT_DIR

    def _fill_checkpoint(self, directory: Path, weights: dict[str, Tensor] | None,
                         state: dict[str, Any]) -> None:
        if not hasattr(self.model, "config"):  # a model with a checkpoint format of its own
            self.model.save_pretrained(directory)
        else:
            model = self.model if weights is None else _Weights(self.model.config, weights)
            save_pretrained(model, directory, training=self._card_facts())
        for name, text in self.checkpoint_files.items():
            atomic_write(directory / name, lambda p, text=text: p.write_text(text))
        save_state(directory, state)

    def _card_facts(self) -> dict[str, Any]:
        """What the checkpoint's model card says about its training."""
        describe = getattr(self.train_data, "describe", None)
        data = describe() if describe is not None else {}
        facts = ", ".join(f"{k} {v}" for k, v in data.items() if isinstance(v, (str, int, float)))
        valid_loss, valid_step = self._last_valid
        return {"step": self.step, "tokens": self.tokens_seen, "data": facts, "command": _command(),
                "valid_loss": valid_loss, "valid_step": valid_step}

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore weights, optimiser, scheduler, data position and RNG states from `path`,
        after checking that this trainer's settings may continue that run."""
        path = Path(path)
        try:
            state = load_state(path)
            saved = TrainConfig.from_dict(state["train_config"])
        except (OSError, KeyError, TypeError, ValueError, SafetensorError) as err:
            raise CheckpointError(f"{path}: cannot resume from this checkpoint ({err})") from None
        self._check_resumable(path, saved, state["step"])
        try:
            distributed.load_model_state(self.model, load_weights(path, self.device), self.fsdp)
            distributed.load_optimizer_state(self.model, self.optimizer, state["optimizer"],
                                             self.fsdp)
            self.scheduler.load_state_dict(state["scheduler"])
            self.train_data.load_state_dict(state["data"])
            set_rng_state(state["rng"])
            self.step, self.tokens_seen = state["step"], state["tokens_seen"]
        except (OSError, KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as err:
            raise CheckpointError(f"{path}: cannot resume from this checkpoint ({err})") from None

    def _check_resumable(self, path: Path, saved: TrainConfig, step: int) -> None:
        """Refuse to continue a run with settings that change what it computes, naming them."""
        conflicts = self.config.resume_conflicts(saved)
        model_config = getattr(self.model, "config", None)
        if model_config is not None:
            run, now = load_config(path).to_dict(), model_config.to_dict()
            conflicts += [f"model {k} (run: {run.get(k)!r}, now: {v!r})" for k, v in now.items()
                          if run.get(k) != v]
        if conflicts:
            raise ConfigError(f"the run in {self.run_dir} was trained with other settings: "
                              f"{'; '.join(conflicts)}. Resume with the run's settings (only the "
                              "step count and bookkeeping such as checkpoint intervals may change) "
                              "or start a new run")
        if self.config.max_steps < step:
            raise ConfigError(f"max_steps is {self.config.max_steps} but the run is already at step "
                              f"{step}; give at least {step} steps")

    def _training_state(self) -> dict[str, Any]:
        return {"step": self.step, "tokens_seen": self.tokens_seen,
                "train_config": self.config.to_dict(),
                "optimizer": distributed.full_optimizer_state(self.model, self.optimizer,
                                                              self.fsdp),
                "scheduler": self.scheduler.state_dict(),
                "data": self.train_data.state_dict(), "rng": rng_state()}

    def _to_device(self, batch: Batch) -> Batch:
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, Tensor) else v
                for k, v in batch.items()}

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16)

    def _log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        with _writing(self.run_dir), open(self.run_dir / METRICS_FILE, "a") as fh:
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
        with _writing(self.run_dir):
            atomic_write(path, lambda p: p.write_text("".join(kept)))

    def _write_run_info(self, resumed: bool) -> None:
        """run.json: the settings actually in use, the data, seed, device and versions."""
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
                "versions": versions(),
                "resumed_at_steps": resumes + ([self.step] if resumed else [])}
        with _writing(self.run_dir):
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


def _command() -> str:
    """The command line this process was started with, as a user would type it."""
    program = Path(sys.argv[0]).name
    program = "python -m bioxlstm" if program == "__main__.py" else program
    return shlex.join([program, *sys.argv[1:]])


def _tensorboard_writer(run_dir: Path) -> Any:
    """A SummaryWriter into run_dir/tensorboard; ConfigError when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("'tensorboard: true' needs the tensorboard package "
                          "(pip install 'bioxlstm[tensorboard]')") from None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))
