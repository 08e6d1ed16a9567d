# Everything a fresh machine needs: `make test` (the CI entry) and `make lab` (the demo).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: lab test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch, pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/python -m nnsight_lab.models.demo

lint: $(STAMP)
	$(BIN)/ruff format --check nnsight_lab tests bench
	$(BIN)/ruff check nnsight_lab tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m pip install -q "nnsight==0.8.1" || echo "nnsight not installed: lab column only"
	$(BIN)/python bench/bench_core.py
	$(BIN)/python bench/bench_features.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
