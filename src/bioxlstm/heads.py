"""Heads on pooled features: a linear layer, or a small MLP (linear, GELU, linear).

Both map (B, d) features to one output per class or target; the MLP's hidden width defaults to d.
"""

from __future__ import annotations

from torch import nn

from bioxlstm.errors import ConfigError

HEADS = ("linear", "mlp")


def build_head(kind: str, d_in: int, outputs: int, hidden: int | None = None) -> nn.Module:
    """A `kind` head from d_in features to `outputs` values (`hidden` applies to the MLP only)."""
    if kind == "linear":
        if hidden is not None:
            raise ConfigError("--head-hidden applies to --head mlp only")
        return nn.Linear(d_in, outputs)
    if kind == "mlp":
        width = hidden or d_in
        return nn.Sequential(nn.Linear(d_in, width), nn.GELU(), nn.Linear(width, outputs))
    raise ConfigError(f"--head must be one of {', '.join(HEADS)}, got {kind!r}")
