"""Mapping an official state dict onto bioxlstm's keys: every key accounted for, every shape checked.

Each family lists rules "bioxlstm key pattern <- official key(s), transform". For every key the
bioxlstm model expects, the first matching rule names its official sources; an official key no
rule uses, a source the file lacks, or a transformed shape that differs from the model's is an
error that lists the keys. Transforms only re-lay tensors, so they also run on meta tensors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from bioxlstm.errors import ConversionError

Transform = Callable[[list[Tensor], torch.Size], Tensor]
SHOWN = 25  # keys named per problem before "(+N more)"


def same(tensors: list[Tensor], shape: torch.Size) -> Tensor:
    """The official tensor as it is (same layout in both codes)."""
    return tensors[0]


@dataclass(frozen=True)
class Rule:
    """bioxlstm keys matching `pattern` come from `sources` (templates using the pattern's groups)."""

    pattern: str
    sources: tuple[str, ...]
    transform: Transform = same


def strip_prefix(state: dict[str, Tensor], prefix: str, path: Path) -> dict[str, Tensor]:
    """The state dict without the official module prefix; keys lacking it are an error."""
    foreign = [k for k in state if not k.startswith(prefix)]
    if foreign:
        raise ConversionError(f"{path}: unexpected key(s) without the '{prefix}' prefix: "
                              f"{_listing(foreign)}")
    return {k[len(prefix):]: v for k, v in state.items()}


def map_state(official: dict[str, Tensor], expected: dict[str, torch.Size], rules: Iterable[Rule],
              path: Path, prefix: str = "") -> dict[str, Tensor]:
    """{bioxlstm key: tensor} for every expected key, or ConversionError listing what is wrong."""
    rules = [(re.compile(rule.pattern + r"\Z"), rule) for rule in rules]
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    missing, unmapped, shapes = [], [], []
    for key, shape in expected.items():
        found = next(((m, rule) for regex, rule in rules if (m := regex.match(key))), None)
        if found is None:
            unmapped.append(key)
            continue
        match, rule = found
        names = [match.expand(template) for template in rule.sources]
        absent = [prefix + n for n in names if n not in official]
        if absent:
            missing += absent
            continue
        used.update(names)
        tensor = rule.transform([official[n] for n in names], shape)
        if tensor.shape != shape:
            shapes.append(f"{'+'.join(prefix + n for n in names)} {tuple(official[names[0]].shape)} "
                          f"-> {key} {tuple(tensor.shape)}, expected {tuple(shape)}")
            continue
        out[key] = tensor.to(torch.float32).contiguous()
    unexpected = [prefix + k for k in official if k not in used]
    _raise_if(path, missing=missing, unexpected=unexpected, unmapped=unmapped, shapes=shapes)
    return out


def _raise_if(path: Path, **problems: list[str]) -> None:
    """One ConversionError naming every problem found, if there is any."""
    words = {"missing": "missing key(s)", "unexpected": "unexpected key(s)",
             "unmapped": "bioxlstm key(s) without a rule", "shapes": "shape mismatch(es)"}
    parts = [f"{words[name]}: {_listing(keys)}" for name, keys in problems.items() if keys]
    if parts:
        raise ConversionError(f"{path}: the weights do not match the official config: "
                              f"{'; '.join(parts)}")


def _listing(keys: list[str]) -> str:
    """Sorted keys, the first SHOWN of them, and how many more there are."""
    shown = ", ".join(sorted(keys)[:SHOWN])
    return shown if len(keys) <= SHOWN else f"{shown} (+{len(keys) - SHOWN} more)"


def pad_rows(tensors: list[Tensor], shape: torch.Size) -> Tensor:
    """An embedding or head matrix with zero rows added up to bioxlstm's padded vocabulary."""
    t = tensors[0]
    if t.dim() != 2 or t.shape[0] > shape[0]:
        return t
    return torch.cat([t, t.new_zeros(shape[0] - t.shape[0], t.shape[1])])


def squeeze_conv(tensors: list[Tensor], shape: torch.Size) -> Tensor:
    """nn.Conv1d's depthwise weight (C, 1, K) as bioxlstm's (C, K)."""
    t = tensors[0]
    return t[:, 0] if t.dim() == 3 and t.shape[1] == 1 else t


def stack(tensors: list[Tensor], shape: torch.Size) -> Tensor:
    """Several official vectors as the rows of one bioxlstm tensor (the q, k, v biases)."""
    return torch.stack(tensors)
