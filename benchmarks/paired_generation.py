"""Paired generation speed: after the same prefill, models take turns generating tokens.

The per-token cost of a generation step is a fraction of a millisecond to a few milliseconds, so
a shared machine's slow periods move it by more than the difference between runs of separate
processes. Here every model generates a few tokens per round, in turn, in one process; the median
of the per-round ratios of ms per token is the comparison.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch
from bench_utils import (
    add_device_arg,
    add_output_args,
    add_paired_args,
    build,
    machine_info,
    resolve_runnable,
    setup_worker,
    sync,
)
from generation import prefill, step


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] + " Prints each "
                                     "model's median ms per new token and how many times "
                                     "faster per token the first model is, per round.")
    add_paired_args(parser)
    parser.add_argument("--context", type=int, default=8192, help="prefill length "
                        "(default %(default)s)")
    parser.add_argument("--batch", type=int, default=1, help="sequences generated at once "
                        "(default %(default)s)")
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds (default "
                        "%(default)s)")
    parser.add_argument("--tokens-per-round", type=int, default=8, help="tokens each model "
                        "generates per round; the round's figure is their median (default "
                        "%(default)s)")
    parser.add_argument("--warmup", type=int, default=8, help="untimed tokens per model after "
                        "the prefill (default %(default)s)")
    add_device_arg(parser)
    add_output_args(parser)
    args = parser.parse_args(argv)
    if min(args.rounds, args.tokens_per_round, args.batch, args.context) < 1 or args.warmup < 0:
        parser.error("--rounds, --tokens-per-round, --batch and --context must be at least 1, "
                     "--warmup at least 0")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def main(argv: list[str] | None = None) -> None:
    """Prefill every model, alternate their generation rounds, print and optionally save."""
    args = parse_args(argv)
    setup_worker(args.threads)
    specs = resolve_runnable(args.models, kinds=("xlstm", "transformer"))
    names = [spec.name for spec in specs]
    torch.manual_seed(0)
    total = args.context + args.warmup + args.rounds * args.tokens_per_round
    device = args.device
    models = [build(spec, total).to(device).eval() for spec in specs]
    ids = torch.randint(0, min(m.config.vocab_size for m in models), (args.batch, args.context),
                        device=device)
    ms: list[list[float]] = [[] for _ in models]
    prefill_s: list[float] = []
    with torch.inference_mode():
        states = []
        for model in models:
            start = time.perf_counter()
            states.append(prefill(model, ids))
            sync(device)
            prefill_s.append(time.perf_counter() - start)
        for _ in range(args.warmup):
            states = [step(model, logits.argmax(-1), memory)
                      for model, (logits, memory) in zip(models, states)]
        for _ in range(args.rounds):
            for index, model in enumerate(models):
                logits, memory = states[index]
                times = []
                for _ in range(args.tokens_per_round):
                    start = time.perf_counter()
                    logits, memory = step(model, logits.argmax(-1), memory)
                    sync(device)
                    times.append(1000 * (time.perf_counter() - start))
                states[index] = logits, memory
                ms[index].append(statistics.median(times))
    rows = []
    for spec, own, seconds in zip(specs, ms, prefill_s):
        rows.append(dict(model=spec.name, params=spec.params, ms_per_token=statistics.median(own),
                         first_times_faster=statistics.median(o / b for o, b in zip(own, ms[0])),
                         rounds_ms_per_token=own, prefill_s=seconds))
    print(f"context={args.context} batch={args.batch} rounds={args.rounds} "
          f"tokens/round={args.tokens_per_round} device={device}")
    for row in rows:
        print(f"{row['model']:<28} {row['ms_per_token']:>8.3f} ms/token   {names[0]} is "
              f"x{row['first_times_faster']:.2f} as fast per token")
    if args.json:
        report: dict[str, Any] = dict(machine=machine_info(device), settings=vars(args),
                                      results=rows)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
