"""The chunkwise mLSTM cell alone: forward and backward of the fused CPU kernel, in one process.

The cell is the largest part of an mLSTM training step after the dense products. Timed apart from
the model, changes to it show up without the noise of the rest of the step. With --torch the
PyTorch chunkwise form runs too, its calls alternating with the kernel's, and the largest
differences of h and of the gradients between the two are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from bench_utils import add_threads_arg, machine_info, setup_worker

from bioxlstm.layers.cpu_kernels import MLSTM_CELL
from bioxlstm.layers.mlstm import mlstm_chunkwise
from bioxlstm.layers.mlstm_cpu import mlstm_chunkwise_fused


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] + " Prints the median "
                                     "milliseconds per call and the products' GFLOP/s.")
    for flag, default, what in (("--batch", 8, "batch size"), ("--heads", 4, "heads"),
                                ("--seq-len", 1024, "sequence length"),
                                ("--head-dim", 128, "head dimension of q, k and v"),
                                ("--chunk", 64, "chunk size"),
                                ("--rounds", 12, "timed calls of each form"),
                                ("--warmup", 2, "untimed calls of each form first")):
        parser.add_argument(flag, type=int, default=default,
                            help=f"{what} (default %(default)s)")
    parser.add_argument("--torch", action="store_true", help="also run the PyTorch chunkwise "
                        "form, alternating with the kernel, and compare their results")
    add_threads_arg(parser)
    parser.add_argument("--json", metavar="OUT", help="also write results and machine info here")
    args = parser.parse_args(argv)
    if min(args.batch, args.heads, args.seq_len, args.head_dim, args.chunk, args.rounds) < 1:
        parser.error("--batch, --heads, --seq-len, --head-dim, --chunk and --rounds must be at "
                     "least 1")
    if args.warmup < 0:
        parser.error("--warmup must be at least 0")
    return args


def product_flops(seq_len: int, chunk: int, dk: int, dv: int) -> tuple[int, int]:
    """FLOPs of the kernel's matrix products for one (batch, head), forward and backward, counted
    as it computes them: each causal n x n score product split at n // 2, the zero block skipped."""
    fwd = bwd = 0
    for t0 in range(0, seq_len, chunk):
        n = min(chunk, seq_len - t0)
        a = n // 2
        lower = a * a + (n - a) * n  # tril_abt, and tril_mm with the scores untransposed
        upper = a * n + (n - a) ** 2  # tril_mm with the scores transposed
        fwd += lower * dk + lower * dv + 2 * n * dk * dv
        bwd += 4 * n * dk * dv + lower * dv + lower * dk + upper * dk + upper * dv
    return 2 * fwd, 2 * bwd


def make_inputs(args: argparse.Namespace) -> list[torch.Tensor]:
    """q, k, v in the layer's (B, S, NH, DH) memory layout, gates with forget biases as trained."""
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, args.seq_len, args.heads, args.head_dim)
    q, k, v = (torch.randn(shape, generator=g).transpose(1, 2) for _ in range(3))
    i = torch.randn(args.batch, args.heads, args.seq_len, generator=g)
    f = torch.randn(args.batch, args.heads, args.seq_len, generator=g) + 3
    return [t.requires_grad_() for t in (q, k, v, i, f)]


def timed_call(cell: Callable[..., torch.Tensor], inputs: list[torch.Tensor],
               dh: torch.Tensor) -> tuple[float, float, list[torch.Tensor]]:
    """Seconds of one forward and one backward, and (h, the gradients of q, k, v, i, f)."""
    start = time.perf_counter()
    h = cell(*inputs)
    mid = time.perf_counter()
    grads = torch.autograd.grad(h, inputs, dh)
    end = time.perf_counter()
    return mid - start, end - mid, [h.detach(), *grads]


def main(argv: list[str] | None = None) -> None:
    """Time the forms, print and optionally save the result."""
    args = parse_args(argv)
    setup_worker(args.threads)
    if MLSTM_CELL.load() is None:
        raise SystemExit("the fused mLSTM CPU kernel is unavailable here (a torch without MKL, "
                         "no compiler, or BIOXLSTM_NO_EXTENSIONS=1): nothing to time")
    cells: dict[str, Callable[..., torch.Tensor]] = {
        "fused": lambda q, k, v, i, f: mlstm_chunkwise_fused(q, k, v, i, f,
                                                             chunk_size=args.chunk)[0]}
    if args.torch:
        cells["torch"] = lambda q, k, v, i, f: mlstm_chunkwise(q, k, v, i, f,
                                                               chunk_size=args.chunk)
    inputs = make_inputs(args)
    dh = torch.randn(inputs[2].shape, generator=torch.Generator().manual_seed(1))
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in cells}
    results: dict[str, list[torch.Tensor]] = {}
    for round_index in range(args.warmup + args.rounds):
        for name, cell in cells.items():
            fwd, bwd, results[name] = timed_call(cell, inputs, dh)
            if round_index >= args.warmup:
                times[name][0].append(fwd)
                times[name][1].append(bwd)
    calls = args.batch * args.heads
    fwd_flops, bwd_flops = (calls * x for x in product_flops(args.seq_len, args.chunk,
                                                              args.head_dim, args.head_dim))
    rows: list[dict[str, Any]] = []
    print(f"B={args.batch} NH={args.heads} S={args.seq_len} DH={args.head_dim} "
          f"chunk={args.chunk} rounds={args.rounds}; products {fwd_flops / 1e9:.2f} GFLOP "
          f"forward, {bwd_flops / 1e9:.2f} backward")
    for name, (fwd, bwd) in times.items():
        row = dict(form=name, forward_ms=1e3 * statistics.median(fwd),
                   backward_ms=1e3 * statistics.median(bwd), forward_calls_ms=[1e3 * t for t in fwd],
                   backward_calls_ms=[1e3 * t for t in bwd])
        row["forward_gflops"] = fwd_flops / row["forward_ms"] / 1e6
        row["backward_gflops"] = bwd_flops / row["backward_ms"] / 1e6
        rows.append(row)
        print(f"{name:<6} forward {row['forward_ms']:8.2f} ms ({row['forward_gflops']:6.1f} "
              f"GFLOP/s)   backward {row['backward_ms']:8.2f} ms "
              f"({row['backward_gflops']:6.1f} GFLOP/s)")
    report: dict[str, Any] = dict(machine=machine_info("cpu"), settings=vars(args), results=rows)
    if args.torch:
        names = ["h", "dq", "dk", "dv", "di", "df"]
        pairs = list(zip(names, results["fused"], results["torch"]))
        report["max_abs_difference"] = {n: (a - b).abs().max().item() for n, a, b in pairs}
        report["max_abs_torch"] = {n: b.abs().max().item() for n, _, b in pairs}
        print("largest |fused - torch| / largest |torch|: " + ", ".join(
            f"{n} {report['max_abs_difference'][n] / report['max_abs_torch'][n]:.1e}"
            for n in names))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
