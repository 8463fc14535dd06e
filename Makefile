# Developer entry points. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint emulator bench bench-smoke lock clean

$(STAMP): requirements.txt requirements-dev.txt docker/emulator/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

## demo: the main job: the emulator, and the sidecar wrapping the sample scoring server
demo: $(STAMP)
	$(BIN)/python docker/demo/run.py

## test: lint and the whole test suite (CI runs exactly this)
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

## emulator: the local Azure emulator on the default fixture, in the foreground
emulator: $(STAMP)
	$(BIN)/python docker/emulator

## bench: the benchmarks (about 7 minutes); rewrites bench/RESULTS.md and the plot
bench: $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	$(BIN)/python bench/run.py

## bench-smoke: every benchmark section, few runs, small N; writes to .cache/bench/
bench-smoke: $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	$(BIN)/python bench/run.py --smoke

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## lock: regenerate requirements.txt from pyproject's runtime dependencies
lock:
	rm -rf .cache/lock && $(PYTHON) -m venv .cache/lock
	.cache/lock/bin/pip install --quiet .
	{ echo "# Runtime lock: exactly what the image installs (pip install --no-deps -r)."; \
	  echo "# Regenerate: make lock"; .cache/lock/bin/pip freeze --exclude aml-secret-sidecar; } > requirements.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
