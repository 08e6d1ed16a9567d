# Everything a fresh machine needs: `make test` (the CI entry) and `make lab` (JupyterLab on notebooks/).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

JS_STAMP := js/node_modules/.installed

.PHONY: lab demo test lint js test-browser bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch, pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

$(JS_STAMP): js/package-lock.json
	cd js && npm ci --no-audit --no-fund
	touch $(JS_STAMP)

# JupyterLab on the notebooks, widgets and %%trace ready (open the URL it prints).
lab: $(STAMP)
	$(BIN)/jupyter lab --no-browser --notebook-dir=notebooks

demo: $(STAMP)
	$(BIN)/python -m nnsight_lab.models.demo

lint: $(STAMP)
	$(BIN)/ruff format --check nnsight_lab tests bench
	$(BIN)/ruff check nnsight_lab tests bench
	$(BIN)/mypy

# The widgets' browser side: lint, unit tests, and the committed bundles equal a fresh build.
js: $(JS_STAMP)
	cd js && npm run lint && npm test && npm run check-bundle

test: lint js
	$(BIN)/python -m pytest

test-browser: $(STAMP)
	$(BIN)/python -m pytest tests/browser -x

bench: $(STAMP)
	$(BIN)/python -m pip install -q "nnsight==0.8.1" || echo "nnsight not installed: lab column only"
	$(BIN)/python bench/bench_core.py
	$(BIN)/python bench/bench_features.py
	$(BIN)/python bench/bench_patching.py

clean:
	rm -rf $(VENV) js/node_modules .pytest_cache .ruff_cache .mypy_cache
