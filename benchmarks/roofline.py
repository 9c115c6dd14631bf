"""The matmul peak of this machine, measured now, and a model's share of the 6·N roofline.

The Performance issue sets its CPU targets against "6 x parameters FLOPs per token at the measured
matmul peak". The peak is machine- and moment-dependent (a shared VM drifts by tens of percent over
minutes), so `paired.py --roofline` measures it in every round, between the models' steps, and
reports each model's share of the roofline from the same round.
"""

from __future__ import annotations

import time

import torch

# (rows, in, out) of products shaped like the dense layers of the ~4M-parameter presets at
# 8,192 tokens per step; the peak is the best rate among them
PEAK_SHAPES = ((8192, 256, 1024), (8192, 1024, 256), (8192, 512, 256), (8192, 256, 512))
# on a GPU those products take microseconds, and launches would set the "peak": there the dense
# layers of prot-xlstm-102m at 32,768 tokens, and one square product near the chip's best rate
CUDA_PEAK_SHAPES = ((32768, 1024, 4096), (32768, 4096, 1024), (32768, 2048, 1024),
                    (8192, 8192, 8192))


class MatmulProbe:
    """Times torch.mm on PEAK_SHAPES; a call returns the best GFLOP/s among them right now."""

    def __init__(self, dtype: torch.dtype = torch.float32, repeats: int = 2,
                 device: str = "cpu") -> None:
        g = torch.Generator().manual_seed(0)
        self.repeats, self.device = repeats, device
        shapes = CUDA_PEAK_SHAPES if device == "cuda" else PEAK_SHAPES
        self.operands = [(torch.randn(m, k, generator=g).to(device, dtype),
                          torch.randn(k, n, generator=g).to(device, dtype),
                          torch.empty(m, n, dtype=dtype, device=device))
                         for m, k, n in shapes]
        self()  # first calls pay for page faults and kernel selection

    def __call__(self) -> float:
        best = 0.0
        cuda = self.device == "cuda"
        for a, b, out in self.operands:
            flops = 2 * a.shape[0] * a.shape[1] * b.shape[1]
            for _ in range(self.repeats):
                if cuda:  # several products back to back between synchronisations
                    torch.cuda.synchronize()
                    start = time.perf_counter()
                    for _ in range(5):
                        torch.mm(a, b, out=out)
                    torch.cuda.synchronize()
                    best = max(best, 5 * flops / (time.perf_counter() - start) / 1e9)
                    continue
                start = time.perf_counter()
                torch.mm(a, b, out=out)
                best = max(best, flops / (time.perf_counter() - start) / 1e9)
        return best


def roofline_share(tokens_per_s: float, params: int, peak_gflops: float) -> float:
    """Fraction of the roofline: 6 * params FLOPs per token at peak_gflops."""
    return tokens_per_s * 6 * params / (peak_gflops * 1e9)
