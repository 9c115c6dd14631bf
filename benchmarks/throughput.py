"""Forward and forward+backward throughput and peak memory of xLSTM and Transformer models.

Each (model, sequence length) case runs in a fresh worker process, so a crash, an out-of-memory
kill or a time-out only skips that case, and peak memory is measured per case.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from bench_utils import (
    DEFAULT_MODELS,
    REFERENCE_MODELS,
    ModelSpec,
    PeakMemory,
    add_output_args,
    add_run_args,
    build,
    build_kernels_first,
    default_models,
    machine_info,
    resolve,
    run_worker,
    setup_worker,
)

PHASES = ("fwd", "train")
FULL = dict(seq_lens="256,1024,4096,16384", batch_tokens=16384, repeats=3, warmup=1,
            max_seconds=120.0)
QUICK = dict(seq_lens="256,1024", batch_tokens=2048, repeats=2, warmup=1, max_seconds=30.0)
# timed calls of one phase further apart than this suggest the machine's speed changed mid-case
UNEVEN = 1.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; unset sizes fall back to the --quick or the full defaults."""
    parser = argparse.ArgumentParser(
        description="Measure forward and forward+backward tokens/s and peak memory of xLSTM "
        "presets and size-matched causal Transformers at several sequence lengths. Each case "
        "runs in its own process; peak memory is torch.cuda.max_memory_allocated on CUDA and "
        "the growth of the process's resident set (RSS high-water mark) on CPU. Cases over "
        "--max-seconds or out of memory are reported as skipped.")
    parser.add_argument("--models",
                        help="comma-separated models: an xLSTM preset name (e.g. dna-xlstm-4m), "
                        "transformer:<preset> for a Transformer with as many parameters, or "
                        "reference:<preset> for the reference xlstm library's model of that "
                        "shape (optional extra: pip install -e '.[reference]') (default: "
                        f"{','.join(DEFAULT_MODELS)}, and {','.join(REFERENCE_MODELS)} when the "
                        "reference library is installed)")
    parser.add_argument("--seq-lens", help=f"comma-separated sequence lengths "
                        f"(default {FULL['seq_lens']}; --quick: {QUICK['seq_lens']})")
    parser.add_argument("--batch-tokens", type=int,
                        help="tokens per batch; batch = max(1, batch_tokens // S) keeps B*S about "
                        f"constant (default {FULL['batch_tokens']}; --quick: "
                        f"{QUICK['batch_tokens']})")
    parser.add_argument("--repeats", type=int, help="timed calls per phase; the median is "
                        f"reported (default {FULL['repeats']}; --quick: {QUICK['repeats']})")
    parser.add_argument("--warmup", type=int, help="untimed calls before timing (default "
                        f"{FULL['warmup']})")
    parser.add_argument("--max-seconds", type=float, help="time budget per case; a phase "
                        "projected to exceed it is skipped, a worker exceeding it is killed "
                        f"(default {FULL['max_seconds']:g}; --quick: {QUICK['max_seconds']:g})")
    add_run_args(parser)
    parser.add_argument("--checkpointing", action="store_true",
                        help="xLSTM models recompute each block in the backward pass (activation "
                             "checkpointing): less memory, about a third more compute")
    parser.add_argument("--bf16", action="store_true",
                        help="bfloat16 mixed precision, as the Trainer's bf16 option runs it: "
                             "float32 weights, every step under torch.autocast to bfloat16")
    add_output_args(parser)
    args = parser.parse_args(argv)
    if args.bf16 and args.dtype != "float32":
        parser.error("--bf16 keeps float32 weights; leave --dtype at float32")
    if (args.warmup is not None and args.warmup < 1) or (args.repeats is not None
                                                         and args.repeats < 1):
        parser.error("--warmup and --repeats must be at least 1")
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.models is None:
        args.models = ",".join(default_models())
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def main(argv: list[str] | None = None) -> None:
    """Run every (model, S) case in a worker process, print a table, optionally write JSON."""
    args = parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    if args.threads:
        torch.set_num_threads(args.threads)
    seq_lens = [int(s) for s in args.seq_lens.split(",")]
    specs = [resolve(name.strip()) for name in args.models.split(",") if name.strip()]
    build_kernels_first(args.device, specs)
    results, methods = [], set()
    for spec in specs:
        over_budget: dict[str, str] = {}
        if spec.skip:
            print(f"{spec.name}: {spec.skip}", file=sys.stderr, flush=True)
            over_budget = {phase: spec.skip for phase in PHASES}
        for seq_len in seq_lens:
            case = dict(spec=asdict(spec), seq_len=seq_len,
                        batch=max(1, args.batch_tokens // seq_len), repeats=args.repeats,
                        warmup=args.warmup, max_seconds=args.max_seconds, device=args.device,
                        dtype=args.dtype, threads=args.threads, checkpointing=args.checkpointing,
                        bf16=args.bf16, phases=[p for p in PHASES if p not in over_budget])
            row = run_case(case, over_budget)
            method = row.pop("memory_method", None)
            if method:
                methods.add(method)
            results.append(row)
            print(format_row(row), file=sys.stderr, flush=True)
    print_table(results)
    if args.json:
        report = dict(machine=machine_info(args.device), memory_method=sorted(methods),
                      settings={k: v for k, v in vars(args).items() if k != "worker"},
                      results=results)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")


def run_case(case: dict[str, Any], over_budget: dict[str, str]) -> dict[str, Any]:
    """Run one case in a worker process; phases it could not finish are marked skipped."""
    spec = case["spec"]
    row: dict[str, Any] = dict(model=spec["name"], kind=spec["kind"], params=spec["params"],
                               seq_len=case["seq_len"], batch=case["batch"],
                               checkpointing=case["checkpointing"], bf16=case["bf16"])
    out, failure = run_worker(__file__, case) if case["phases"] else ("", "")
    for line in out.splitlines():
        if line.startswith("{"):
            row.update(json.loads(line))
    for phase in PHASES:
        if phase in over_budget:
            row[phase] = dict(status="skipped", reason=over_budget[phase])
        elif phase not in row:
            row[phase] = dict(status="skipped" if failure.startswith("skipped") else "error",
                              reason=failure)
        if row[phase]["status"] == "skipped" and phase not in over_budget:
            over_budget[phase] = f"skipped: already skipped at S={case['seq_len']}"
    return row


def worker(case: dict[str, Any]) -> None:
    """Measure the requested phases of one case, printing one JSON line per phase."""
    setup_worker(case["threads"])
    deadline = time.perf_counter() + case["max_seconds"]
    device, dtype = case["device"], getattr(torch, case["dtype"])
    torch.manual_seed(0)
    model = build(ModelSpec(**case["spec"]), case["seq_len"]).to(device=device, dtype=dtype)
    if case["checkpointing"] and hasattr(model, "gradient_checkpointing"):
        model.gradient_checkpointing(True)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (case["batch"], case["seq_len"]), device=device)
    memory = PeakMemory(device)
    print(json.dumps(dict(memory_method=memory.method, threads=torch.get_num_threads())),
          flush=True)
    skipped = ""
    for phase in case["phases"]:
        if skipped:
            print(json.dumps({phase: dict(status="skipped", reason=skipped)}), flush=True)
            continue
        if device == "cuda":
            memory = PeakMemory(device)
        step = partial(forward_step if phase == "fwd" else train_step, bf16=case["bf16"])
        try:
            result = measure(step, model, ids, case, deadline, memory)
        except RuntimeError as err:
            if "out of memory" not in str(err) and "can't allocate" not in str(err):
                raise
            result = dict(status="skipped", reason=f"skipped: out of memory ({str(err)[:80]})")
        print(json.dumps({phase: result}), flush=True)
        if result["status"] != "ok":
            skipped = f"skipped: {phase} was ({result['reason']})"


def measure(step: Any, model: torch.nn.Module, ids: torch.Tensor, case: dict[str, Any],
            deadline: float, memory: PeakMemory) -> dict[str, Any]:
    """Time repeated calls of step after warm-up; skip when the first call projects past deadline."""
    first = timed(step, model, ids, case["device"])
    calls_left = case["warmup"] - 1 + case["repeats"]
    if time.perf_counter() + first * calls_left > deadline:
        return dict(status="skipped", reason=f"skipped: one call took {first:.1f} s, "
                    f"{calls_left} more would pass --max-seconds {case['max_seconds']:g}")
    for _ in range(case["warmup"] - 1):
        timed(step, model, ids, case["device"])
    times = [timed(step, model, ids, case["device"]) for _ in range(case["repeats"])]
    seconds = statistics.median(times)
    return dict(status="ok", tokens_per_s=ids.numel() / seconds, seconds=times,
                peak_mib=memory.peak_mib())


def timed(step: Any, model: torch.nn.Module, ids: torch.Tensor, device: str) -> float:
    """Wall-clock seconds of one call of step, synchronised on CUDA."""
    start = time.perf_counter()
    step(model, ids)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def forward_step(model: torch.nn.Module, ids: torch.Tensor, bf16: bool = False) -> None:
    """Inference forward pass, under bfloat16 autocast with bf16."""
    model.eval()
    with torch.inference_mode(), torch.autocast(ids.device.type, torch.bfloat16, enabled=bf16):
        model(ids)


def train_step(model: torch.nn.Module, ids: torch.Tensor, bf16: bool = False) -> None:
    """Forward and next-token cross-entropy (under bfloat16 autocast with bf16), then backward
    outside autocast as the Trainer does; gradients are freed afterwards."""
    model.train()
    with torch.autocast(ids.device.type, torch.bfloat16, enabled=bf16):
        logits = model(ids).logits[:, :-1]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                               ids[:, 1:].reshape(-1))
    loss.backward()
    model.zero_grad(set_to_none=True)


def cell(result: dict[str, Any], key: str, fmt: str) -> str:
    """A table cell: the formatted value, or the phase's status."""
    return format(result[key], fmt) if result.get("status") == "ok" else result.get("status", "-")


def format_row(row: dict[str, Any]) -> str:
    """One table row."""
    fwd, train = row["fwd"], row["train"]
    return (f"{row['model']:<28} {row['params']:>10,} {row['seq_len']:>6} {row['batch']:>5} "
            f"{cell(fwd, 'tokens_per_s', ',.0f'):>12} {cell(train, 'tokens_per_s', ',.0f'):>12} "
            f"{cell(fwd, 'peak_mib', ',.1f'):>9} {cell(train, 'peak_mib', ',.1f'):>9}")


def print_table(results: list[dict[str, Any]]) -> None:
    """The results table, then the reason for every skipped or failed phase."""
    header = (f"{'model':<28} {'params':>10} {'S':>6} {'batch':>5} {'fwd tok/s':>12} "
              f"{'f+b tok/s':>12} {'fwd MiB':>9} {'f+b MiB':>9}")
    print(header)
    print("-" * len(header))
    for row in results:
        print(format_row(row))
    printed = set()
    for row in results:
        for phase in PHASES:
            reason = row[phase]["reason"] if row[phase]["status"] != "ok" else uneven(row[phase])
            if reason and (row["model"], reason) not in printed:
                printed.add((row["model"], reason))
                print(f"  {row['model']} S={row['seq_len']} {phase}: {reason}")


def uneven(result: dict[str, Any]) -> str:
    """A warning when a phase's timed calls differ by more than UNEVEN times, else ""."""
    seconds = result.get("seconds", [])
    if len(seconds) < 2 or max(seconds) <= UNEVEN * min(seconds):
        return ""
    return (f"timed calls ranged {min(seconds):.2f}-{max(seconds):.2f} s "
            f"({max(seconds) / min(seconds):.1f}x): the machine's speed changed during the case; "
            "rerun it, or compare models with paired.py")


if __name__ == "__main__":
    main()
