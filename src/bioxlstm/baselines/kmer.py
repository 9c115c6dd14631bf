"""An order-k Markov (k-mer) language model: the simple baseline a sequence model must beat."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class KmerModel:
    """p(x_t | previous k symbols) from counts with add-alpha smoothing.

    `symbols` are the token ids the model covers (for DNA the four bases) or their number (ids
    0..n-1). A position whose target or context holds another id (N, a separator) is neither
    counted nor scored, so the alphabet's special tokens do not inflate the table. Counts are kept
    sparse, so orders of 10 and more fit in memory.
    """

    def __init__(self, k: int, symbols: int | Sequence[int], alpha: float = 0.1):
        symbols = list(range(symbols)) if isinstance(symbols, int) else sorted(set(symbols))
        if k < 0 or not symbols or len(symbols) ** (k + 1) >= 2 ** 62:
            raise ValueError(f"k={k} is out of range for {len(symbols)} symbols")
        self.k, self.alpha, self.size = k, alpha, len(symbols)
        self._index = np.full(max(symbols) + 1, -1, dtype=np.int64)
        self._index[symbols] = np.arange(len(symbols))
        empty = np.zeros(0, dtype=np.int64)
        self._pairs, self._pair_counts, self._contexts, self._context_counts = empty, empty, empty, empty

    def _codes(self, tokens: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(context code, target index) of every position whose k + 1 tokens are all symbols."""
        ids, lut = tokens.numpy().astype(np.int64), self._index
        idx = np.where((ids >= 0) & (ids < len(lut)), lut[np.clip(ids, 0, len(lut) - 1)], -1)
        n = len(idx) - self.k
        if n <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        ctx, ok = np.zeros(n, dtype=np.int64), idx[self.k:] >= 0
        for j in range(self.k):
            part = idx[j: j + n]
            ok &= part >= 0
            ctx = ctx * self.size + np.maximum(part, 0)
        return ctx[ok], idx[self.k:][ok]

    def fit(self, tokens: torch.Tensor) -> KmerModel:
        ctx, target = self._codes(tokens)
        self._pairs, self._pair_counts = np.unique(ctx * self.size + target, return_counts=True)
        self._contexts, self._context_counts = np.unique(ctx, return_counts=True)
        return self

    def nll(self, tokens: torch.Tensor) -> float:
        """Mean negative log-likelihood (nats) of each scored token (after the first k)."""
        ctx, target = self._codes(tokens)
        if not len(ctx):
            raise ValueError(f"no position of these tokens has {self.k + 1} symbols in a row")
        pair = _lookup(self._pairs, self._pair_counts, ctx * self.size + target)
        total = _lookup(self._contexts, self._context_counts, ctx)
        p = (pair + self.alpha) / (total + self.alpha * self.size)
        return float(-np.log(p).mean())


def _lookup(keys: np.ndarray, counts: np.ndarray, query: np.ndarray) -> np.ndarray:
    """counts[key] for each query key (0 for keys never seen); keys are sorted."""
    if not len(keys):
        return np.zeros(len(query))
    at = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[at] == query, counts[at], 0).astype(np.float64)
