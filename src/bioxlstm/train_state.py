"""Training state on disk without pickle: nested containers as JSON, tensors as safetensors.

Optimiser, scheduler, data-source and RNG states are nested dicts, lists and tuples of numbers,
strings and tensors; `save_state` stores the structure as JSON and every tensor in one safetensors
file, and `load_state` rebuilds it exactly (tuples and non-string dict keys included).
"""

from __future__ import annotations

import json
import platform
import random
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from bioxlstm.errors import CheckpointError
from bioxlstm.io import atomic_write

STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"


def save_state(directory: Path, state: dict[str, Any]) -> None:
    """Write `state` as training_state.json + training_state.safetensors into directory."""
    tensors: dict[str, Tensor] = {}
    meta = json.dumps(_flatten(state, tensors))
    atomic_write(directory / STATE_TENSORS, lambda p: save_file(tensors, str(p)))
    atomic_write(directory / STATE_JSON, lambda p: p.write_text(meta))


def load_state(directory: Path) -> dict[str, Any]:
    """Read what `save_state` wrote."""
    tensors = load_file(str(directory / STATE_TENSORS))
    return _unflatten(json.loads((directory / STATE_JSON).read_text()), tensors)


def versions() -> dict[str, str]:
    """Versions of Python and the libraries a run's numbers depend on, for run records."""
    try:
        bioxlstm_version = metadata.version("bioxlstm")
    except metadata.PackageNotFoundError:
        bioxlstm_version = "unknown"
    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "bioxlstm": bioxlstm_version}


def rng_state() -> dict[str, Any]:
    """The python, numpy, torch (and CUDA) generator states."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
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
