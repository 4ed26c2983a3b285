# Two commands do all the set-up on a fresh clone:
#   make run    the default experiment (creates .venv and installs on first use)
#   make test   the test suite
# Python 3.11 is required (PYTHON=/path/to/python3.11 to choose one).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120

.PHONY: help run test test-fast lint bench status server deploy worker ui stop clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' 
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e . || $(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

run: $(STAMP)  ## run the default experiment (ARGS="--rounds 10 ..." to change it)
	$(BIN)/python -m flows.active_learning $(ARGS)

status: $(STAMP)  ## what is cached for the experiment ARGS describes
	$(BIN)/python -m flows.active_learning --status $(ARGS)

test: $(STAMP)  ## the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)  ## core and task tests only (seconds)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff (the core may not import Prefect)
	$(BIN)/ruff check alcore tasks flows tests benchmarks

bench: $(STAMP)  ## the speed benchmark (JSON in artifacts/benchmark.json)
	$(BIN)/python -m benchmarks.run $(ARGS)

clean:  ## remove the environment and outputs
	rm -rf $(VENV) artifacts .pytest_cache
