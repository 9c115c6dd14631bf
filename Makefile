# `make test` and `make demo` set up .venv on first use (CPU PyTorch pinned), then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PIN := torch==2.13.0

.PHONY: test demo bench lint clean gpu-wheels gpu-dry-run

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -e ".[all,dev]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks experiments

test: lint
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/bioxlstm demo

bench: $(STAMP)
	mkdir -p benchmarks/results docs/img
	$(BIN)/python benchmarks/throughput.py --batch-tokens 8192 --repeats 5 --warmup 2 \
		--max-seconds 300 --json benchmarks/results/throughput.json
	$(BIN)/python benchmarks/throughput.py --models dna-xlstm-4m --seq-lens 32768 \
		--batch-tokens 8192 --repeats 3 --warmup 1 --max-seconds 500 \
		--json benchmarks/results/throughput_32k.json
	for s in 1024 4096 16384; do $(BIN)/python benchmarks/paired.py --seq-len $$s --rounds 6 \
		--models transformer:dna-xlstm-4m,dna-xlstm-4m --roofline \
		--json benchmarks/results/paired_$$s.json || exit 1; done
	$(BIN)/python benchmarks/paired.py --seq-len 32768 --rounds 3 --warmup 1 --models dna-xlstm-4m \
		--roofline --json benchmarks/results/paired_32768.json
	$(BIN)/python benchmarks/generation.py --json benchmarks/results/generation.json
	$(BIN)/python benchmarks/paired_generation.py --json benchmarks/results/paired_generation.json
	$(BIN)/python benchmarks/plot.py --throughput benchmarks/results/throughput.json \
		benchmarks/results/throughput_32k.json --generation benchmarks/results/generation.json \
		--out docs/img

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs

# the wheels benchmarks/gpu_check.sh installs offline on a GPU machine (benchmarks/wheels/, ignored)
gpu-wheels: $(STAMP)
	bash benchmarks/gpu_wheels.sh

# benchmarks/gpu_check.sh's parts on the CPU with tiny sizes: its plumbing, before a GPU is lent
gpu-dry-run: $(STAMP)
	PYTHON=$(abspath $(BIN)/python) bash benchmarks/gpu_check.sh --dry-run
