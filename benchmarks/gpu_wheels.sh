#!/usr/bin/env bash
# Rebuild benchmarks/wheels/ (git-ignored): the wheels benchmarks/gpu_check.sh installs offline on the
# GPU machine (CPython 3.12, x86-64 Linux, no internet). Never torch: the machine's CUDA build is used.
#   bash benchmarks/gpu_wheels.sh          (or: make gpu-wheels)
# mlstm_kernels is what the machine lacks (its needs, einops, matplotlib, numpy, PyYAML and torch,
# are there). bioxlstm's own dependencies are there too (KINDS.md's package list); their wheels travel
# as fallbacks, used by pip only if one is missing, and setuptools builds bioxlstm itself offline.
# The check at the end compares everything with the machine's package list.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
DEST=benchmarks/wheels
WHEELS=(
    mlstm_kernels==2.0.6      # the Triton mLSTM kernels (NXAI Community License)
    numpy==2.5.2              # fallbacks, the versions the machine was seen with
    safetensors==0.8.0
    pyyaml==6.0.4
    tqdm==4.70.1
    huggingface_hub==1.33.0
    setuptools==84.2.1        # bioxlstm's build backend, for pip install -e . without an index
)
rm -rf "$DEST" && mkdir -p "$DEST"
specs=()
for line in "${WHEELS[@]}"; do specs+=("${line%%#*}"); done
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d "$DEST" ${specs[@]}
ls -l "$DEST"
"$PYTHON" benchmarks/gpu_check.py wheels --folder "$DEST"
