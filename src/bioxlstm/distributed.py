"""Multi-process training on torch.distributed: the torchrun environment, row sharding, DDP/FSDP.

A run under torchrun draws the same global batch on every rank and each rank trains on its own
contiguous share of the rows, so results and the saved data position do not depend on world size.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from bioxlstm.config.train import STRATEGIES
from bioxlstm.errors import ConfigError


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job: global rank, number of processes, rank on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1


def env_from_torchrun() -> DistEnv:
    """RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them; a single process without them."""
    try:
        return DistEnv(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                       int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError as err:
        raise ConfigError(f"the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK) is not a set "
                          f"of integers: {err}") from None


def setup(device: str) -> tuple[DistEnv, torch.device]:
    """Join the process group torchrun describes (nccl on CUDA, gloo on CPU) and pick the device.

    Under torchrun, 'auto' and 'cuda' mean cuda:LOCAL_RANK; a single process resolves `device`
    as usual. The group is created once per process and torn down at exit.
    """
    env = env_from_torchrun()
    if not env.distributed:
        if device == "auto":
            return env, torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return env, torch.device(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"under torchrun 'device' must be 'auto', 'cuda' or 'cpu' (each rank "
                          f"uses cuda:LOCAL_RANK), got {device!r}")
    chosen = torch.device(device) if device == "cpu" else torch.device("cuda", env.local_rank)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
        atexit.register(_destroy)
    if dist.get_world_size() != env.world_size or dist.get_rank() != env.rank:
        raise ConfigError("the process group does not match RANK/WORLD_SIZE of the environment")
    return env, chosen


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard_rows(batch: dict[str, Any], env: DistEnv) -> dict[str, Any]:
    """This rank's contiguous share of a global batch: rows [r*B/W, (r+1)*B/W) of every tensor.

    Non-tensor entries (such as the objective name) pass through; the row count must divide.
    """
    if not env.distributed:
        return batch
    rows = batch["input_ids"].shape[0]
    if rows % env.world_size:
        raise ConfigError(f"a batch of {rows} rows cannot be split evenly over {env.world_size} "
                          f"processes; make batch_size a multiple of the world size")
    share = rows // env.world_size
    start = env.rank * share
    return {k: v[start:start + share] if isinstance(v, Tensor) and v.dim() and v.shape[0] == rows
            else v for k, v in batch.items()}


def eval_rows(batch: dict[str, Any], env: DistEnv) -> tuple[dict[str, Any], bool]:
    """This rank's share of an evaluation batch, whose size need not divide, and whether it counts.

    A rank left without rows runs the first row and drops its result, so every rank makes the same
    number of forward calls (FSDP gathers weights in each).
    """
    if not env.distributed:
        return batch, True
    rows = batch["input_ids"].shape[0]
    bounds = [rows * r // env.world_size for r in range(env.world_size + 1)]
    start, end = bounds[env.rank], bounds[env.rank + 1]
    counts = end > start
    if not counts:
        start, end = 0, 1
    return {k: v[start:end] if isinstance(v, Tensor) and v.dim() and v.shape[0] == rows else v
            for k, v in batch.items()}, counts


def all_reduce_sum(tensor: Tensor, env: DistEnv) -> Tensor:
    """The sum of `tensor` over all ranks (itself when running alone)."""
    if env.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(env: DistEnv) -> None:
    """Wait until every rank reaches this point."""
    if env.distributed:
        dist.barrier()


class LossForward(nn.Module):
    """Makes `model.loss` the forward pass, so DDP's gradient hooks see the training call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **batch: Any) -> Tensor:
        """The model's training loss on one batch."""
        return self.model.loss(**batch)


def wrap(model: nn.Module, strategy: str, env: DistEnv, device: torch.device) -> nn.Module:
    """The module the trainer calls for the loss: model.loss itself, or DDP/FSDP around it.

    FSDP (FSDP2 `fully_shard`) shards each block and the rest of the model over the ranks in
    place; the returned module still computes the loss.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"'distributed' must be one of {STRATEGIES}, got {strategy!r}")
    net = LossForward(model)
    if not env.distributed:
        return net
    if strategy == "ddp":
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(net, device_ids=ids)
    from torch.distributed.fsdp import fully_shard

    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor.data, src=0)  # every rank shards rank 0's initial weights
    for block in getattr(getattr(model, "stack", None), "blocks", []):
        fully_shard(block)
    fully_shard(model)
    return net


@contextmanager
def gradient_sync(net: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip DDP's gradient all-reduce inside (for all but the last accumulated micro-batch)."""
    skip = not enabled and isinstance(net, nn.parallel.DistributedDataParallel)
    with net.no_sync() if skip else nullcontext():
        yield


def full_value(tensor: Tensor) -> Tensor:
    """A plain tensor from a DTensor result (FSDP's gradient norm); other tensors unchanged."""
    full = getattr(tensor, "full_tensor", None)
    return full() if callable(full) else tensor


def _full_options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(model: nn.Module) -> dict[str, Tensor]:
    """An FSDP model's complete weights, gathered on rank 0 (a collective call: every rank)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_full_options())


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                         fsdp: bool) -> dict[str, Any]:
    """The optimiser state; under FSDP gathered on rank 0 and keyed by parameter name."""
    if not fsdp:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_full_options())


def load_model_state(model: nn.Module, weights: dict[str, Tensor], fsdp: bool) -> None:
    """Load complete weights, strictly; under FSDP each rank keeps its shard."""
    if not fsdp:
        model.load_state_dict(weights, strict=True)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True))


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                         state: dict[str, Any], fsdp: bool) -> None:
    """Load an optimiser state saved by `full_optimizer_state` with the same strategy."""
    if not fsdp:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state,
                             options=StateDictOptions(full_state_dict=True))
