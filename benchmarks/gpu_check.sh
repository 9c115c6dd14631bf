#!/usr/bin/env bash
# The prepared GPU check of issue #22: install, GPU tests, throughput, generation and the cell, in
# one budgeted run (8 minutes by default). On the GPU machine, from the repository root:
#   bash benchmarks/gpu_check.sh                  # needs benchmarks/wheels/ (make gpu-wheels) carried
#   bash benchmarks/gpu_check.sh --parts cell-bf16,compile --budget 150     # rerun some parts
#   bash benchmarks/gpu_check.sh --dry-run        # here, on the CPU: tiny sizes, the GPU left out
# The output is teed to $OUT/gpu_check.log (OUT: the device tool's folder, else
# benchmarks/results/gpu_check), beside results.json (every part's status and numbers),
# summary.md (the tables, with the issue's targets) and the pytest junit files. A failed part is
# recorded and the run goes on; the exit status is 1 if any part was not ok.
# `python3 benchmarks/gpu_check.py --help` describes the parts; benchmarks/README.md the whole.
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-$PWD/benchmarks/results/gpu_check}"
mkdir -p "$OUT"
PYTHON="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
{
    echo "gpu_check.sh $* ($(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(hostname), $("$PYTHON" --version 2>&1))"
    command -v nvidia-smi >/dev/null && nvidia-smi
    "$PYTHON" benchmarks/gpu_check.py run --out "$OUT" "$@"
} 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
