"""Per-token generation cost and state memory versus context length: xLSTM state vs KV cache.

Each case runs in a fresh worker process: prefill a random context, then generate greedily one
token at a time, from the xLSTM's recurrent state or the Transformer's KV cache. A second part
scores long sequences with `log_likelihood(ids, chunk_tokens=...)` to show bounded memory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict
from typing import Any

import torch
from bench_utils import (
    ModelSpec,
    PeakMemory,
    add_output_args,
    add_run_args,
    build,
    build_kernels_first,
    machine_info,
    resolve,
    run_worker,
    setup_worker,
    storage_bytes,
    sync,
    tensor_bytes,
)

from bioxlstm.baselines import KVCache, TransformerLanguageModel

DEFAULT_MODELS = "dna-xlstm-4m,transformer:dna-xlstm-4m"
FULL = dict(contexts="1024,8192", new_tokens=64, score_lengths="16384,65536", chunk_tokens=2048,
            max_seconds=300.0)
QUICK = dict(contexts="256,1024", new_tokens=16, score_lengths="4096,16384", chunk_tokens=1024,
             max_seconds=60.0)
WARMUP_TOKENS = 64
MIB = 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; unset sizes fall back to the --quick or the full defaults."""
    parser = argparse.ArgumentParser(
        description="Measure generation after a prefill of each context length: prefill time, "
        "mean ms per generated token, and the memory of the xLSTM's recurrent state against "
        "the Transformer's KV cache (exact tensor bytes, plus peak RSS growth on CPU). Then "
        "score long sequences with the xLSTM's chunked log_likelihood at two lengths, whose "
        "peak memory should not depend on the length. Every case runs in its own process.")
    parser.add_argument("--models", default=DEFAULT_MODELS,
                        help="comma-separated models: an xLSTM preset name or transformer:<preset> "
                        "for a Transformer as large (default: %(default)s)")
    parser.add_argument("--contexts", help="comma-separated context (prefill) lengths "
                        f"(default {FULL['contexts']}; --quick: {QUICK['contexts']})")
    parser.add_argument("--new-tokens", type=int, help="tokens generated after each prefill "
                        f"(default {FULL['new_tokens']}; --quick: {QUICK['new_tokens']})")
    parser.add_argument("--batch", type=int, default=1, help="sequences generated at once "
                        "(default 1)")
    parser.add_argument("--score-lengths", help="comma-separated lengths scored by the xLSTM "
                        "models' chunked log_likelihood; empty to skip (default "
                        f"{FULL['score_lengths']}; --quick: {QUICK['score_lengths']})")
    parser.add_argument("--chunk-tokens", type=int, help="tokens per piece when scoring "
                        f"(default {FULL['chunk_tokens']}; --quick: {QUICK['chunk_tokens']})")
    parser.add_argument("--max-seconds", type=float, help="time budget per case; a worker "
                        "over it plus a minute of start-up is killed and the case skipped "
                        f"(default {FULL['max_seconds']:g}; --quick: {QUICK['max_seconds']:g})")
    add_run_args(parser)
    add_output_args(parser)
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.new_tokens < 1 or args.batch < 1 or args.chunk_tokens < 1:
        parser.error("--new-tokens, --batch and --chunk-tokens must be at least 1")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def lengths(text: str) -> list[int]:
    """Comma-separated integers."""
    return [int(s) for s in text.split(",") if s.strip()]


def main(argv: list[str] | None = None) -> None:
    """Run every generation and scoring case in a worker, print tables, optionally write JSON."""
    args = parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    if args.threads:
        torch.set_num_threads(args.threads)
    specs = [resolve(name.strip()) for name in args.models.split(",") if name.strip()]
    build_kernels_first(args.device, specs)
    common = dict(batch=args.batch, device=args.device, dtype=args.dtype, threads=args.threads,
                  max_seconds=args.max_seconds)
    generation, scoring, methods = [], [], set()
    for spec in specs:
        for context in lengths(args.contexts):
            case = dict(common, task="generate", spec=asdict(spec), context=context,
                        new_tokens=args.new_tokens)
            generation.append(run_case(case, dict(context=context), methods))
            print(format_generation(generation[-1]), file=sys.stderr, flush=True)
    for spec in (s for s in specs if s.kind == "xlstm"):
        for length in lengths(args.score_lengths):
            case = dict(common, task="score", spec=asdict(spec), length=length,
                        chunk_tokens=args.chunk_tokens)
            scoring.append(run_case(case, dict(length=length, chunk_tokens=args.chunk_tokens),
                                    methods))
            print(format_scoring(scoring[-1]), file=sys.stderr, flush=True)
    print_tables(generation, scoring)
    if args.json:
        report = dict(machine=machine_info(args.device), memory_method=sorted(methods),
                      settings={k: v for k, v in vars(args).items() if k != "worker"},
                      generation=generation, scoring=scoring)
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")


def run_case(case: dict[str, Any], fields: dict[str, Any], methods: set[str]) -> dict[str, Any]:
    """Run one case in a worker process; a row with status ok, skipped or error."""
    spec = case["spec"]
    row: dict[str, Any] = dict(model=spec["name"], kind=spec["kind"], params=spec["params"],
                               batch=case["batch"], **fields)
    out, failure = run_worker(__file__, case)
    for line in out.splitlines():
        if line.startswith("{"):
            row.update(json.loads(line))
    if "memory_method" in row:
        methods.add(row.pop("memory_method"))
    if "status" not in row:
        row.update(status="skipped" if failure.startswith("skipped") else "error",
                   reason=failure)
    return row


def worker(case: dict[str, Any]) -> None:
    """Measure one case and print its results as one JSON line."""
    setup_worker(case["threads"])
    torch.manual_seed(0)
    generating = case["task"] == "generate"
    size = case["context"] + case["new_tokens"] if generating else case["chunk_tokens"]
    model = build(ModelSpec(**case["spec"]), size)
    model = model.to(device=case["device"], dtype=getattr(torch, case["dtype"])).eval()
    measure = generate_case if generating else score_case
    with torch.inference_mode():
        result = measure(model, case)
    print(json.dumps(dict(result, status="ok", threads=torch.get_num_threads())), flush=True)


def prefill(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """Last logits (B, vocab) and the state (xLSTM) or KV cache (Transformer) after ids."""
    if isinstance(model, TransformerLanguageModel):
        out = model(ids, return_cache=True)
        return out.logits[:, -1], out.cache
    out = model(ids, return_state=True)
    return out.logits[:, -1], out.state


def step(model: torch.nn.Module, next_ids: torch.Tensor, memory: Any) -> tuple[torch.Tensor, Any]:
    """Logits for one new token per sequence; both models advance their state or cache in place."""
    return model.step(next_ids, memory), memory


def held(memory: Any) -> Any:
    """The tensors a state or cache holds: for a KV cache, only the filled positions."""
    if isinstance(memory, KVCache):
        return [t[:, :, :memory.length] for t in memory.keys + memory.values]
    return memory


def memory_fields(memory: Any, suffix: str) -> dict[str, float]:
    """State or cache size: tensor bytes, and bytes of the storages kept alive, in MiB."""
    return {f"state_mib{suffix}": tensor_bytes(held(memory)) / MIB,
            f"state_held_mib{suffix}": storage_bytes(held(memory)) / MIB}


def generate_case(model: torch.nn.Module, case: dict[str, Any]) -> dict[str, Any]:
    """Prefill the context, then time greedy generation token by token."""
    device, vocab = case["device"], model.config.vocab_size
    ids = torch.randint(0, vocab, (case["batch"], case["context"]), device=device)
    logits, memory = prefill(model, ids[:, :WARMUP_TOKENS])
    for _ in range(2):
        logits, memory = step(model, logits.argmax(-1), memory)
    peak = PeakMemory(device)
    start = time.perf_counter()
    logits, memory = prefill(model, ids)
    sync(device)
    prefill_s = time.perf_counter() - start
    result: dict[str, Any] = dict(prefill_s=prefill_s, prefill_peak_mib=peak.peak_mib(),
                                  memory_method=peak.method, **memory_fields(memory, ""))
    peak, times = PeakMemory(device), []
    for _ in range(case["new_tokens"]):
        start = time.perf_counter()
        logits, memory = step(model, logits.argmax(-1), memory)
        sync(device)
        times.append(1000 * (time.perf_counter() - start))
    return dict(result, ms_per_token=statistics.mean(times),
                ms_per_token_median=statistics.median(times), step_ms=times,
                decode_peak_mib=peak.peak_mib(), **memory_fields(memory, "_end"))


def score_case(model: torch.nn.Module, case: dict[str, Any]) -> dict[str, Any]:
    """Time one chunked log_likelihood call over a long random sequence, with its peak memory."""
    device = case["device"]
    ids = torch.randint(0, model.config.vocab_size, (case["batch"], case["length"]),
                        device=device)
    peak = PeakMemory(device)
    start = time.perf_counter()
    model.log_likelihood(ids, chunk_tokens=case["chunk_tokens"])
    sync(device)
    seconds = time.perf_counter() - start
    return dict(seconds=seconds, tokens_per_s=ids.numel() / seconds, peak_mib=peak.peak_mib(),
                memory_method=peak.method)


def cell(row: dict[str, Any], key: str, fmt: str) -> str:
    """A table cell: the formatted value, or the case's status."""
    return format(row[key], fmt) if row["status"] == "ok" else row["status"]


def format_generation(row: dict[str, Any]) -> str:
    """One row of the generation table."""
    return (f"{row['model']:<26} {row['params']:>10,} {row['context']:>7} "
            f"{cell(row, 'prefill_s', '.2f'):>9} {cell(row, 'ms_per_token', '.2f'):>9} "
            f"{cell(row, 'ms_per_token_median', '.2f'):>9} {cell(row, 'state_mib', ',.2f'):>9} "
            f"{cell(row, 'state_held_mib', ',.2f'):>9} {cell(row, 'prefill_peak_mib', ',.1f'):>9} "
            f"{cell(row, 'decode_peak_mib', ',.1f'):>9}")


def format_scoring(row: dict[str, Any]) -> str:
    """One row of the scoring table."""
    return (f"{row['model']:<26} {row['length']:>8} {row['chunk_tokens']:>6} "
            f"{cell(row, 'seconds', '.2f'):>9} {cell(row, 'tokens_per_s', ',.0f'):>9} "
            f"{cell(row, 'peak_mib', ',.1f'):>9}")


def print_tables(generation: list[dict[str, Any]], scoring: list[dict[str, Any]]) -> None:
    """The generation and scoring tables, then the reason for every case that did not finish."""
    header = (f"{'model':<26} {'params':>10} {'context':>7} {'prefill s':>9} {'ms/tok':>9} "
              f"{'median':>9} {'state MiB':>9} {'held MiB':>9} {'pre. peak':>9} {'dec. peak':>9}")
    print(header, "-" * len(header), *map(format_generation, generation), sep="\n")
    if scoring:
        header = (f"{'scoring (chunked)':<26} {'length':>8} {'chunk':>6} {'seconds':>9} "
                  f"{'tok/s':>9} {'peak MiB':>9}")
        print("", header, "-" * len(header), *map(format_scoring, scoring), sep="\n")
    for row in generation + scoring:
        if row["status"] != "ok":
            print(f"  {row['model']} {row.get('context', row.get('length'))}: {row['reason']}")


if __name__ == "__main__":
    main()
