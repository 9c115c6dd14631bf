"""Adapter for the reference `xlstm` library (NX-AI, PyPI `xlstm==2.0.6`), for benchmarks only.

Builds the reference library's original block-stack language model (`xLSTMLMModel`) with the
shape of one of our presets, so `throughput.py` can time it as `reference:<preset>`. mLSTM blocks
use the library's only mLSTM backend (the stabilised parallel form, quadratic in S); sLSTM blocks
use the `vanilla` (pure PyTorch) backend so that no CUDA extension is compiled.

The library is an optional benchmark extra (`pip install -e ".[reference]"`) and is imported
only inside the functions here, never by the `bioxlstm` package; without it `missing()` says why
and the benchmarks report `reference:` models as skipped.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

REFERENCE_VERSION = "2.0.6"
INSTALL_HINT = f'pip install -e ".[reference]" (xlstm=={REFERENCE_VERSION})'


def missing() -> str:
    """Why the reference library cannot be used here, or "" when it can."""
    try:
        import xlstm  # noqa: F401
    except ImportError as err:
        return f"reference xlstm library not installed ({err}); {INSTALL_HINT}"
    return ""


def reference_config(preset_name: str, context_length: int) -> Any:
    """The reference `xLSTMLMModelConfig` with the shape of our preset."""
    from xlstm import (
        FeedForwardConfig,
        mLSTMBlockConfig,
        mLSTMLayerConfig,
        sLSTMBlockConfig,
        sLSTMLayerConfig,
        xLSTMLMModelConfig,
    )

    from bioxlstm.config import preset

    ours = preset(preset_name)
    unsupported = [name for name in ("rope", "bidirectional") if getattr(ours, name)]
    if unsupported:
        raise ValueError(f"the reference xlstm library has no equivalent of {unsupported} "
                         f"(preset {preset_name})")
    mlstm = None
    if ours.has_mlstm:
        mlstm = mLSTMBlockConfig(mlstm=mLSTMLayerConfig(
            conv1d_kernel_size=ours.conv_kernel, qkv_proj_blocksize=ours.qkv_blocksize,
            num_heads=ours.mlstm_heads, proj_factor=ours.proj_factor,
            round_proj_up_to_multiple_of=ours.round_to))
    slstm = None
    if ours.slstm_at:
        slstm = sLSTMBlockConfig(
            slstm=sLSTMLayerConfig(backend="vanilla", num_heads=ours.slstm_heads,
                                   conv1d_kernel_size=ours.conv_kernel, bias_init="powerlaw_blockdependent"),
            feedforward=FeedForwardConfig(proj_factor=ours.ffn_proj_factor, act_fn="gelu",
                                          round_proj_up_to_multiple_of=ours.round_to))
    return xLSTMLMModelConfig(
        vocab_size=ours.vocab_size, embedding_dim=ours.d_model, num_blocks=ours.num_blocks,
        context_length=context_length, mlstm_block=mlstm, slstm_block=slstm,
        slstm_at=list(ours.slstm_at), dropout=ours.dropout, bias=False, tie_weights=False,
        add_post_blocks_norm=True)


class Output:
    """What our benchmarks read from a model's output: `.logits`."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits


class ReferenceLM(nn.Module):
    """The reference `xLSTMLMModel`, returning `.logits` like ours; `.config.vocab_size` is ours."""

    def __init__(self, preset_name: str, context_length: int) -> None:
        super().__init__()
        from xlstm import xLSTMLMModel

        self.config = reference_config(preset_name, context_length)
        self.model = xLSTMLMModel(self.config)
        self.model.reset_parameters()

    def forward(self, input_ids: torch.Tensor) -> Output:
        return Output(self.model(input_ids))


def reference_model(preset_name: str, seq_len: int) -> nn.Module:
    """The reference model shaped like our preset, with context length seq_len.

    The reference mLSTM cell keeps a (context, context) causal mask per block, so the context is
    set to the sequence length actually run, not to the preset's (32k for dna-xlstm-4m).
    """
    return ReferenceLM(preset_name, seq_len)


def reference_params(preset_name: str) -> int:
    """Parameter count of the reference model for our preset (independent of the context)."""
    return sum(p.numel() for p in reference_model(preset_name, 16).parameters())
