# `make test` and `make demo` set up .venv on first use (CPU PyTorch pinned), then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PIN := torch==2.13.0

.PHONY: test demo bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks experiments

test: lint
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/bioxlstm demo

bench: $(STAMP)
	mkdir -p benchmarks/results docs/img
	$(BIN)/python benchmarks/throughput.py --json benchmarks/results/throughput.json
	$(BIN)/python benchmarks/generation.py --json benchmarks/results/generation.json
	$(BIN)/python benchmarks/paired_generation.py --json benchmarks/results/paired_generation.json
	$(BIN)/python benchmarks/plot.py --throughput benchmarks/results/throughput.json \
		--generation benchmarks/results/generation.json --out docs/img

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs
