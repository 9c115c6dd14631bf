"""Reading official checkpoint files without running pickled code.

Every pickle goes through `torch.load(weights_only=True)`, which rebuilds only tensors and plain
containers. A DNA-xLSTM Lightning `.ckpt` also pickles its Hydra config as omegaconf objects; for
those (and only those) names, inert stand-in classes are allow-listed that keep the pickled state
and run nothing, so omegaconf is not needed and no interpolation is ever resolved (one in the
released configs runs `nvidia-smi`). Anything else a file asks for is refused, naming the file.
"""

from __future__ import annotations

import collections
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from bioxlstm.errors import ConversionError

# (module, class) of the objects a PyTorch Lightning 1.8 checkpoint pickles for its Hydra config
OMEGACONF_NAMES = (
    ("omegaconf.dictconfig", "DictConfig"), ("omegaconf.listconfig", "ListConfig"),
    ("omegaconf.base", "ContainerMetadata"), ("omegaconf.base", "Metadata"),
    ("omegaconf.nodes", "AnyNode"), ("omegaconf.nodes", "StringNode"),
    ("omegaconf.nodes", "IntegerNode"), ("omegaconf.nodes", "FloatNode"),
    ("omegaconf.nodes", "BooleanNode"), ("typing", "Any"),
)


class Captured:
    """Stand-in for a pickled omegaconf object: keeps the pickled state, has no behaviour."""

    def __setstate__(self, state: Any) -> None:
        self.__dict__["captured_state"] = state


def _stand_in(module: str, name: str) -> type:
    """A Captured subclass that torch's allow-list matches to the pickled name module.name."""
    cls = type(name, (Captured,), {})
    cls.__module__, cls.__qualname__ = module, name
    return cls


STAND_INS = [_stand_in(module, name) for module, name in OMEGACONF_NAMES]
# Lightning pickles with protocol 2, which names these builtins as globals
PLAIN_GLOBALS = [dict, list, int, collections.defaultdict]


def load_pickle(path: Path, with_omegaconf: bool = False) -> Any:
    """torch.load(path, weights_only=True); omegaconf stand-ins allowed for Lightning checkpoints.

    Raises ConversionError (one line, naming the file) for a truncated or foreign file and for a
    pickle that needs anything beyond tensors and plain containers.
    """
    allowed = [*STAND_INS, *PLAIN_GLOBALS] if with_omegaconf else []
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if allowed and safe_globals is None:
        raise ConversionError(f"{path}: reading a Lightning checkpoint safely needs torch >= 2.5")
    try:
        if allowed:
            with safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" in str(err) and "Unsupported operand" not in str(err):
            raise ConversionError(f"{path}: refused: {_refusal(str(err))}; only tensors and plain "
                                  f"containers are loaded (torch.load weights_only=True)") from None
        raise ConversionError(f"{path}: truncated or not a PyTorch checkpoint ({_reason(err)})") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as err:
        raise ConversionError(f"{path}: truncated or not a PyTorch checkpoint ({_reason(err)})") from None


def _reason(err: Exception) -> str:
    """The first sentence of an error's message (torch's run over several lines), or its type."""
    text = " ".join(str(err).split())
    found = re.search(r"WeightsUnpickler error: (.*?)(\.|$)", text)
    text = (found.group(1) if found else text).split(" Check the documentation")[0]
    text = text.split(". ")[0][:160]
    return text if len(text) > 8 else type(err).__name__


def _refusal(message: str) -> str:
    """What a weights-only unpickling error objects to, in a few words."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return f"the pickle needs {found.group(1)}, which is not a tensor or plain container"
    return f"the pickle is not plain data ({_reason(pickle.UnpicklingError(message))})"


def load_weights_file(path: Path) -> dict[str, Tensor]:
    """A state dict from a pickle or a .safetensors file; every value must be a tensor."""
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise ConversionError(f"{path}: truncated or not a safetensors file ({err})") from None
    else:
        state = load_pickle(path)
    return tensor_dict(state, path)


def tensor_dict(state: Any, path: Path, what: str = "state dict") -> dict[str, Tensor]:
    """`state` as {name: tensor}; anything else in it is an error naming the file and the key."""
    if not isinstance(state, dict):
        raise ConversionError(f"{path}: expected a {what} (a mapping of names to tensors), "
                              f"got {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise ConversionError(f"{path}: {what} entry {key!r} is a {type(value).__name__}, "
                                  f"not a tensor")
    return dict(state)


def plain(obj: Any) -> Any:
    """Captured omegaconf objects as the dicts, lists and values they hold; nothing is resolved.

    An interpolation such as "${eval:...}" stays the string it is.
    """
    if isinstance(obj, Captured):
        state = obj.__dict__.get("captured_state")
        if not isinstance(state, dict):
            return state
        if "_content" in state:
            return plain(state["_content"])
        return plain(state.get("_val"))
    if isinstance(obj, dict):
        return {key: plain(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(value) for value in obj]
    return obj
