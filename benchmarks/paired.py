"""Paired training throughput: models take turns, one step each, in one process.

On a shared or throttled machine the speed of a step drifts by tens of percent over minutes, so
two models measured in separate runs can differ by more than they truly do. Alternating their
steps exposes both to the same conditions; the median of the per-round ratios is the comparison.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch
from bench_utils import add_output_args, add_paired_args, build, machine_info, resolve_runnable, setup_worker
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
    parser.add_argument("--roofline", action="store_true", help="also time the matmul peak in "
                        "every round (roofline.py) and report each model's median share of the "
                        "6 x parameters roofline at that round's peak")
    add_output_args(parser)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0 or args.seq_len < 2 or args.batch_tokens < 1:
        parser.error("--rounds and --batch-tokens must be at least 1, --seq-len at least 2, "
                     "--warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> None:
    """Build every model, alternate their training steps, print and optionally save the result."""
    args = parse_args(argv)
    setup_worker(args.threads)
    specs = resolve_runnable(args.models)
    names = [spec.name for spec in specs]
    batch = max(1, args.batch_tokens // args.seq_len)
    torch.manual_seed(0)
    models = [build(spec, args.seq_len) for spec in specs]
    ids = torch.randint(0, min(m.config.vocab_size for m in models), (batch, args.seq_len))
    probe = MatmulProbe(torch.bfloat16 if args.bf16 else torch.float32) if args.roofline else None
    seconds: list[list[float]] = [[] for _ in models]
    peaks: list[float] = []
    for round_index in range(args.warmup + args.rounds):
        for model, times in zip(models, seconds):
            start = time.perf_counter()
            train_step(model, ids, bf16=args.bf16)
            if round_index >= args.warmup:
                times.append(time.perf_counter() - start)
        if probe is not None and round_index >= args.warmup:
            peaks.append(probe())
    tokens = ids.numel()
    rows = []
    for spec, times in zip(specs, seconds):
        ratios = [base / own for base, own in zip(seconds[0], times)]
        row = dict(model=spec.name, params=spec.params,
                   tokens_per_s=tokens / statistics.median(times),
                   ratio_to_first=statistics.median(ratios),
                   calls_tokens_per_s=[tokens / t for t in times])
        if peaks:
            row["roofline_share"] = statistics.median(
                roofline_share(tokens / t, spec.params, peak) for t, peak in zip(times, peaks))
        rows.append(row)
    print(f"S={args.seq_len} batch={batch} rounds={args.rounds} bf16={args.bf16}")
    if peaks:
        print(f"matmul peak {statistics.median(peaks):,.0f} GFLOP/s (median of rounds; "
              f"{min(peaks):,.0f}-{max(peaks):,.0f})")
    for row in rows:
        share = f"   {100 * row['roofline_share']:.1f}% of roofline" if peaks else ""
        print(f"{row['model']:<28} {row['tokens_per_s']:>10,.0f} tok/s   "
              f"x{row['ratio_to_first']:.3f} of {names[0]}{share}")
    if args.json:
        report: dict[str, Any] = dict(machine=machine_info("cpu"), settings=vars(args),
                                      batch=batch, results=rows)
        if peaks:
            report["matmul_peak_gflops_per_round"] = peaks
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
