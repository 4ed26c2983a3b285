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

.PHONY: help run test test-fast lint bench sweep status server deploy worker ui stop clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' 
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
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

sweep: $(STAMP)  ## the default sweep: 10 seeds x 6 strategies on a local Dask cluster (ARGS to change)
	$(BIN)/python -m flows.sweep $(ARGS)

bench: $(STAMP)  ## the speed benchmark (JSON in artifacts/benchmark.json)
	$(BIN)/python -m benchmarks.run $(ARGS)

# ---------------------------------------------------------------- run on a schedule
PORT ?= 4200
SERVER_HOME := $(CURDIR)/.prefect-server
SERVER_URL := http://127.0.0.1:$(PORT)
POOL := bal-pool
export BAL_PROJECT_DIR := $(CURDIR)

server: $(STAMP)  ## start a local Prefect server with its UI on 127.0.0.1:$(PORT)
	@mkdir -p $(SERVER_HOME)
	@if [ -f $(SERVER_HOME)/server.pid ] && kill -0 $$(cat $(SERVER_HOME)/server.pid) 2>/dev/null; then \
		echo "server already running: $(SERVER_URL)"; exit 0; fi; \
	PREFECT_HOME=$(SERVER_HOME) PREFECT_UI_API_URL=$(SERVER_URL)/api PREFECT_SERVER_ANALYTICS_ENABLED=false \
		setsid $(BIN)/prefect server start --host 127.0.0.1 --port $(PORT) > $(SERVER_HOME)/server.log 2>&1 & \
	echo $$! > $(SERVER_HOME)/server.pid; \
	for i in $$(seq 120); do curl -sf $(SERVER_URL)/api/health >/dev/null && break; sleep 1; done; \
	curl -sf $(SERVER_URL)/api/health >/dev/null && echo "server up: $(SERVER_URL) (log: $(SERVER_HOME)/server.log)" \
		|| { echo "server did not start; see $(SERVER_HOME)/server.log"; exit 1; }

deploy: $(STAMP)  ## create the process work pool and apply prefect.yaml's deployments
	PREFECT_API_URL=$(SERVER_URL)/api $(BIN)/prefect work-pool create $(POOL) --type process --overwrite
	PREFECT_API_URL=$(SERVER_URL)/api $(BIN)/prefect --no-prompt deploy --all

worker: $(STAMP)  ## start a worker for the pool (runs the scheduled flows)
	@PREFECT_API_URL=$(SERVER_URL)/api setsid $(BIN)/prefect worker start --pool $(POOL) \
		> $(SERVER_HOME)/worker.log 2>&1 & echo $$! > $(SERVER_HOME)/worker.pid; \
	echo "worker started (log: $(SERVER_HOME)/worker.log)"

ui:  ## print (and try to open) the UI's address
	@echo "Prefect UI: $(SERVER_URL)"; (command -v xdg-open >/dev/null && xdg-open $(SERVER_URL) >/dev/null 2>&1) || true

stop:  ## stop the worker (SIGINT: it ignores SIGTERM while running flows) and the server
	@if [ -f $(SERVER_HOME)/worker.pid ]; then kill -INT -- -$$(cat $(SERVER_HOME)/worker.pid) 2>/dev/null || true; rm -f $(SERVER_HOME)/worker.pid; fi
	@if [ -f $(SERVER_HOME)/server.pid ]; then kill -TERM -- -$$(cat $(SERVER_HOME)/server.pid) 2>/dev/null || true; rm -f $(SERVER_HOME)/server.pid; fi
	@echo stopped

clean:  ## remove the environment and outputs
	rm -rf $(VENV) artifacts .pytest_cache
