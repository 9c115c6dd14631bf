"""Baseline models that benchmarks and experiments compare the xLSTM against."""

from bioxlstm.baselines.transformer import (
    KVCache,
    TransformerConfig,
    TransformerLanguageModel,
    TransformerOutput,
    transformer_like,
)

__all__ = [
    "KVCache",
    "TransformerConfig",
    "TransformerLanguageModel",
    "TransformerOutput",
    "transformer_like",
]
