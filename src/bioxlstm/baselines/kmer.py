"""An order-k Markov (k-mer) language model: the simple baseline a sequence model must beat."""

from __future__ import annotations

import numpy as np
import torch


class KmerModel:
    """p(x_t | previous k tokens) from counts with add-alpha smoothing."""

    def __init__(self, k: int, vocab_size: int, alpha: float = 0.1):
        if k < 0 or vocab_size ** (k + 1) > 50_000_000:
            raise ValueError(f"k={k} is out of range for a vocabulary of {vocab_size}")
        self.k, self.vocab_size, self.alpha = k, vocab_size, alpha
        self.counts = np.zeros((vocab_size ** k, vocab_size), dtype=np.float64)

    def _contexts(self, ids: np.ndarray) -> np.ndarray:
        ctx = np.zeros(len(ids) - self.k, dtype=np.int64)
        for j in range(self.k):
            ctx = ctx * self.vocab_size + ids[j: len(ids) - self.k + j]
        return ctx

    def fit(self, tokens: torch.Tensor) -> KmerModel:
        ids = tokens.numpy()
        np.add.at(self.counts, (self._contexts(ids), ids[self.k:]), 1.0)
        return self

    def nll(self, tokens: torch.Tensor) -> float:
        """Mean negative log-likelihood (nats) of each token after the first k."""
        ids = tokens.numpy()
        ctx = self._contexts(ids)
        counts = self.counts[ctx]
        p = (counts[np.arange(len(ctx)), ids[self.k:]] + self.alpha) / (
            counts.sum(1) + self.alpha * self.vocab_size)
        return float(-np.log(p).mean())
