"""Where one training step's time goes: torch.profiler's self time per operator and input shape.

Run `python benchmarks/profile_step.py --preset dna-xlstm-4m --seq-len 1024 --batch 8`; the table
feeds docs/performance.md. Warm-up steps run first so allocator page faults are not counted.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import profile

from bioxlstm import XLSTMLanguageModel, preset
from bioxlstm.allocator import retain_freed_memory


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="dna-xlstm-4m", help="model preset (default dna-xlstm-4m)")
    parser.add_argument("--blocks", type=int, help="override the number of blocks (fewer is faster)")
    parser.add_argument("--seq-len", type=int, default=1024, help="sequence length (default 1024)")
    parser.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision as the "
                        "Trainer's bf16 option runs it: float32 weights under torch.autocast")
    parser.add_argument("--rows", type=int, default=25, help="operators to list (default 25)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    retain_freed_memory()
    overrides = {"context_length": max(args.seq_len, 1024)}
    if args.blocks:
        overrides.update(num_blocks=args.blocks, slstm_at=[j for j in preset(args.preset).slstm_at
                                                          if j < args.blocks])
    torch.manual_seed(0)
    model = XLSTMLanguageModel(preset(args.preset, **overrides))
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq_len))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = model.loss(ids)
        loss.backward()

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    with profile(record_shapes=True) as prof:
        step()
    seconds = time.perf_counter() - start
    print(f"{args.preset} ({model.config.num_blocks} blocks), B={args.batch}, S={args.seq_len}: "
          f"{seconds:.2f} s per forward+backward under the profiler, "
          f"{ids.numel() / seconds:,.0f} tokens/s")
    print(prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=28,
        max_shapes_column_width=60))


if __name__ == "__main__":
    main()
