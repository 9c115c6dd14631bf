"""Paired training throughput: models take turns, one step each, in one process.

On a shared or throttled machine the speed of a step drifts by tens of percent over minutes, so
two models measured in separate runs can differ by more than they truly do. Alternating their
steps exposes both to the same conditions; the median of the per-round ratios is the comparison.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import torch
from bench_utils import (
    PeakMemory,
    add_device_arg,
    add_output_args,
    add_paired_args,
    build,
    machine_info,
    out_of_memory,
    resolve_runnable,
    setup_worker,
    sync,
)
from roofline import MatmulProbe, roofline_share
from throughput import train_step


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] + " Prints each "
                                     "model's median fwd+bwd tokens/s and each model's median "
                                     "ratio of tokens/s to the first model's, per round.")
    add_paired_args(parser)
    parser.add_argument("--seq-len", type=int, default=1024, help="sequence length "
                        "(default %(default)s)")
    parser.add_argument("--batch-tokens", type=int, default=8192,
                        help="batch = max(1, batch_tokens // seq_len) (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds, one step of "
                        "every model each (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first "
                        "(default %(default)s)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast, as in "
                        "throughput.py --bf16")
    add_device_arg(parser)
    parser.add_argument("--roofline", action="store_true", help="also time the matmul peak in "
                        "every round (roofline.py) and report each model's median share of the "
                        "6 x parameters roofline at that round's peak")
    add_output_args(parser)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0 or args.seq_len < 2 or args.batch_tokens < 1:
        parser.error("--rounds and --batch-tokens must be at least 1, --seq-len at least 2, "
                     "--warmup at least 0")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def main(argv: list[str] | None = None) -> None:
    """Build every model, alternate their training steps, print and optionally save the result."""
    args = parse_args(argv)
    setup_worker(args.threads)
    specs = resolve_runnable(args.models)
    names = [spec.name for spec in specs]
    batch = max(1, args.batch_tokens // args.seq_len)
    torch.manual_seed(0)
    device = args.device
    models = [build(spec, args.seq_len).to(device) for spec in specs]
    ids = torch.randint(0, min(m.config.vocab_size for m in models), (batch, args.seq_len),
                        device=device)
    probe = MatmulProbe(torch.bfloat16 if args.bf16 else torch.float32,
                        device=device) if args.roofline else None
    seconds: list[list[float]] = [[] for _ in models]
    warmup_seconds: list[list[float]] = [[] for _ in models]
    peak_mib: list[float | None] = [None for _ in models]  # per model on CUDA only
    failed: dict[int, str] = {}  # model index -> why it stopped (out of memory)
    peaks: list[float] = []
    for round_index in range(args.warmup + args.rounds):
        for index, model in enumerate(models):
            if index in failed:
                continue
            memory = PeakMemory(device) if device == "cuda" else None
            start = time.perf_counter()
            try:
                train_step(model, ids, bf16=args.bf16)
                sync(device)
            except RuntimeError as err:
                if not out_of_memory(err):
                    raise
                failed[index] = f"skipped: out of memory ({str(err)[:80]})"
                print(f"{names[index]}: {failed[index]}", file=sys.stderr, flush=True)
                model.zero_grad(set_to_none=True)
                if device == "cuda":
                    torch.cuda.empty_cache()  # give the others back what the failed step held
                continue
            took = time.perf_counter() - start
            (seconds if round_index >= args.warmup else warmup_seconds)[index].append(took)
            if memory is not None:
                peak_mib[index] = max(peak_mib[index] or 0.0, memory.peak_mib())
        if probe is not None and round_index >= args.warmup:
            peaks.append(probe())
    tokens = ids.numel()
    rows = []
    for index, (spec, times) in enumerate(zip(specs, seconds)):
        row: dict[str, Any] = dict(model=spec.name, params=spec.params, peak_mib=peak_mib[index],
                                   warmup_seconds=warmup_seconds[index])
        if index in failed or not times or not seconds[0]:
            row.update(status="skipped", reason=failed.get(index, f"{names[0]} did not run"),
                       calls_tokens_per_s=[tokens / t for t in times])
            rows.append(row)
            continue
        ratios = [base / own for base, own in zip(seconds[0], times)]
        row.update(status="ok", tokens_per_s=tokens / statistics.median(times),
                   ratio_to_first=statistics.median(ratios),
                   calls_tokens_per_s=[tokens / t for t in times])
        if peaks:
            row["roofline_share"] = statistics.median(
                roofline_share(tokens / t, spec.params, peak) for t, peak in zip(times, peaks))
        rows.append(row)
    print(f"S={args.seq_len} batch={batch} rounds={args.rounds} bf16={args.bf16} device={device}")
    if peaks:
        print(f"matmul peak {statistics.median(peaks):,.0f} GFLOP/s (median of rounds; "
              f"{min(peaks):,.0f}-{max(peaks):,.0f})")
    for row in rows:
        if row["status"] != "ok":
            print(f"{row['model']:<28} {row['reason']}")
            continue
        share = f"   {100 * row['roofline_share']:.1f}% of roofline" if peaks else ""
        memory_text = f"   peak {row['peak_mib']:,.0f} MiB" if row["peak_mib"] is not None else ""
        print(f"{row['model']:<28} {row['tokens_per_s']:>10,.0f} tok/s   "
              f"x{row['ratio_to_first']:.3f} of {names[0]}{share}{memory_text}")
    if args.json:
        report: dict[str, Any] = dict(machine=machine_info(device), settings=vars(args),
                                      batch=batch, results=rows)
        if peaks:
            report["matmul_peak_gflops_per_round"] = peaks
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
