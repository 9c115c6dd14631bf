"""The chunkwise mLSTM cell alone: forward and backward of the fused CPU kernel, in one process.

The cell is the largest part of an mLSTM training step after the dense products. Timed apart from
the model, changes to it show up without the noise of the rest of the step. With --torch the
PyTorch chunkwise form runs too, its calls alternating with the kernel's, and the largest
differences of h and of the gradients between the two are printed.

On CUDA (--device cuda) the first form is "bioxlstm": the chunkwise cell as the mLSTM layer calls
it (`layers.backends`; mlstm_kernels' Triton kernel behind bioxlstm's adapter where installed).
--package also times mlstm_kernels' own chunkwise kernels at the same shapes, called directly on
contiguous inputs as that package's users call them: the comparison of the GPU issue.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from bench_utils import add_device_arg, add_threads_arg, machine_info, setup_worker, sync

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
    parser.add_argument("--package", default="", metavar="NAME[@CHUNK],...",
                        help="also time these mlstm_kernels chunkwise kernels (e.g. "
                        "triton_xl_chunk@128,triton_limit_chunk; on CPU native_autograd) at the "
                        "same shapes, each at its own default chunk unless @CHUNK is given")
    parser.add_argument("--dispatcher", action="store_true", help="time the cell as the mLSTM "
                        "layer calls it (form 'bioxlstm', the kernel registry's choice) rather "
                        "than the fused CPU kernel directly; always so on CUDA")
    add_device_arg(parser)
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="dtype of q, k, v and the gates (default %(default)s)")
    parser.add_argument("--autocast", action="store_true", help="call every form under "
                        "bfloat16 autocast, as bf16 training does (mlstm_kernels' kernels with "
                        "autocast_kernel_dtype=bfloat16, their fastest setting)")
    add_threads_arg(parser)
    parser.add_argument("--json", metavar="OUT", help="also write results and machine info here")
    args = parser.parse_args(argv)
    if min(args.batch, args.heads, args.seq_len, args.head_dim, args.chunk, args.rounds) < 1:
        parser.error("--batch, --heads, --seq-len, --head-dim, --chunk and --rounds must be at "
                     "least 1")
    if args.warmup < 0:
        parser.error("--warmup must be at least 0")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cpu" and (args.dtype != "float32" or args.autocast):
        parser.error("the fused CPU kernel takes float32: --dtype and --autocast need --device cuda")
    try:
        args.packages = [package_spec(item) for item in args.package.split(",") if item.strip()]
    except ValueError as err:
        parser.error(f"--package: {err}")
    return args


def package_spec(item: str) -> tuple[str, int | None]:
    """`NAME[@CHUNK]` -> (NAME, CHUNK or None for the kernel's default)."""
    name, _, chunk = item.strip().partition("@")
    if chunk and (not chunk.isdigit() or int(chunk) < 1):
        raise ValueError(f"bad chunk in {item!r}")
    return name, int(chunk) if chunk else None


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
    """q, k, v in the layer's (B, S, NH, DH) memory layout, gates with forget biases as trained,
    on --device in --dtype."""
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, args.seq_len, args.heads, args.head_dim)
    to = dict(device=getattr(args, "device", "cpu"), dtype=getattr(torch, getattr(args, "dtype",
                                                                                  "float32")))
    q, k, v = (torch.randn(shape, generator=g).to(**to).transpose(1, 2) for _ in range(3))
    i = torch.randn(args.batch, args.heads, args.seq_len, generator=g).to(**to)
    f = (torch.randn(args.batch, args.heads, args.seq_len, generator=g) + 3).to(**to)
    return [t.requires_grad_() for t in (q, k, v, i, f)]


def timed_call(cell: Callable[..., torch.Tensor], inputs: list[torch.Tensor],
               dh: torch.Tensor, device: str = "cpu",
               autocast: bool = False) -> tuple[float, float, list[torch.Tensor]]:
    """Seconds of one forward and one backward (synchronised on CUDA), and (h, the gradients of
    q, k, v, i, f)."""
    sync(device)
    start = time.perf_counter()
    with torch.autocast(device, torch.bfloat16, enabled=autocast):
        h = cell(*inputs)
    sync(device)
    mid = time.perf_counter()
    grads = torch.autograd.grad(h, inputs, dh.to(h.dtype))
    sync(device)
    end = time.perf_counter()
    return mid - start, end - mid, [h.detach(), *grads]


def package_cells(args: argparse.Namespace) -> dict[str, Callable[..., torch.Tensor]]:
    """The --package kernels as cells on their own contiguous copies of the inputs; a kernel that
    is not there (package or GPU missing) is named on stderr and left out."""
    from bioxlstm.layers.mlstm_triton import package_kernel

    cells = {}
    for name, chunk in args.packages:
        kernel = package_kernel(f"chunkwise--{name}")
        if kernel is None:
            print(f"mlstm_kernels:{name}: not available here (mlstm_kernels, or its Triton "
                  "kernels and a GPU, missing)", file=sys.stderr)
            continue
        options: dict[str, Any] = {} if chunk is None else {"chunk_size": chunk}
        if args.autocast:
            options["autocast_kernel_dtype"] = torch.bfloat16
        label = f"mlstm_kernels:{name}" + ("" if chunk is None else f"@{chunk}")
        cells[label] = lambda q, k, v, i, f, kernel=kernel, options=options: kernel(
            q, k, v, i, f, **options)
    return cells


def main(argv: list[str] | None = None) -> None:
    """Time the forms, print and optionally save the result."""
    args = parse_args(argv)
    setup_worker(args.threads)
    cells: dict[str, Callable[..., torch.Tensor]] = {}
    if args.device == "cuda" or args.dispatcher:
        from bioxlstm.layers.backends import mlstm_kernel

        chunkwise = mlstm_kernel("chunkwise")
        cells["bioxlstm"] = lambda q, k, v, i, f: chunkwise(q, k, v, i, f, None, args.chunk)[0]
    elif MLSTM_CELL.load() is None:
        raise SystemExit("the fused mLSTM CPU kernel is unavailable here (a torch without MKL, "
                         "no compiler, or BIOXLSTM_NO_EXTENSIONS=1): nothing to time")
    else:
        cells["fused"] = lambda q, k, v, i, f: mlstm_chunkwise_fused(q, k, v, i, f,
                                                                     chunk_size=args.chunk)[0]
    if args.torch:
        cells["torch"] = lambda q, k, v, i, f: mlstm_chunkwise(q, k, v, i, f,
                                                               chunk_size=args.chunk)
    packages = package_cells(args)
    cells.update(packages)
    inputs = make_inputs(args)
    contiguous = [t.detach().contiguous().requires_grad_() for t in inputs]
    dh = torch.randn(inputs[2].shape, generator=torch.Generator().manual_seed(1)).to(
        args.device, getattr(torch, args.dtype))
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in cells}
    results: dict[str, list[torch.Tensor]] = {}
    failed: dict[str, str] = {}  # a form that raised (e.g. a kernel refusing the shape) stops
    for round_index in range(args.warmup + args.rounds):
        for name, cell in cells.items():
            if name in failed:
                continue
            try:
                fwd, bwd, results[name] = timed_call(
                    cell, contiguous if name in packages else inputs, dh, args.device,
                    args.autocast)
            except Exception as err:  # noqa: BLE001 - reported, and the other forms go on
                failed[name] = f"error: {type(err).__name__}: {str(err)[:300]}"
                print(f"{name}: {failed[name]}", file=sys.stderr, flush=True)
                times.pop(name, None)
                results.pop(name, None)
                continue
            if round_index >= args.warmup:
                times[name][0].append(fwd)
                times[name][1].append(bwd)
    if not times:
        raise SystemExit("every form failed")
    calls = args.batch * args.heads
    fwd_flops, bwd_flops = (calls * x for x in product_flops(args.seq_len, args.chunk,
                                                              args.head_dim, args.head_dim))
    rows: list[dict[str, Any]] = []
    print(f"B={args.batch} NH={args.heads} S={args.seq_len} DH={args.head_dim} "
          f"chunk={args.chunk} rounds={args.rounds} device={args.device} dtype={args.dtype}"
          f"{' autocast' if args.autocast else ''}; products {fwd_flops / 1e9:.2f} GFLOP "
          f"forward, {bwd_flops / 1e9:.2f} backward")
    width = max(6, *map(len, times))
    for name, (fwd, bwd) in times.items():
        row = dict(form=name, forward_ms=1e3 * statistics.median(fwd),
                   backward_ms=1e3 * statistics.median(bwd), forward_calls_ms=[1e3 * t for t in fwd],
                   backward_calls_ms=[1e3 * t for t in bwd])
        row["forward_gflops"] = fwd_flops / row["forward_ms"] / 1e6
        row["backward_gflops"] = bwd_flops / row["backward_ms"] / 1e6
        rows.append(row)
        print(f"{name:<{width}} forward {row['forward_ms']:8.2f} ms ({row['forward_gflops']:6.1f} "
              f"GFLOP/s)   backward {row['backward_ms']:8.2f} ms "
              f"({row['backward_gflops']:6.1f} GFLOP/s)")
    report: dict[str, Any] = dict(machine=machine_info(args.device), settings=vars(args),
                                  results=rows, failed=failed)
    names = ["h", "dq", "dk", "dv", "di", "df"]
    first = next(iter(results))
    report["relative_difference_to_first"] = {
        name: {n: relative_max(a, b) for n, a, b in zip(names, results[name], results[first])}
        for name in results if name != first}
    for name, diffs in report["relative_difference_to_first"].items():
        if name == "torch" and first == "fused":
            continue  # printed below, as before
        print(f"largest |{name} - {first}| / largest |{first}|: "
              + ", ".join(f"{n} {d:.1e}" for n, d in diffs.items()))
    if args.torch and "fused" in results:
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



def relative_max(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |a - b| over the largest |b|, in float32."""
    a, b = a.float(), b.float()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


if __name__ == "__main__":
    main()
