"""Choosing the torch device a command or run works on."""

from __future__ import annotations

import torch

from bioxlstm.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """The torch device for a config's or option's `device`; 'auto' picks CUDA when present.

    A name torch does not know, or a CUDA device on a machine without one, is a ConfigError.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for, but no CUDA GPU is available; use cpu")
    return device
