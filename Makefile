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

.PHONY: help run test test-fast browser lint bench soak sweep status server deploy worker ui stop clean

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

test-fast: $(STAMP)  ## no process, sleep, server or heavy JAX: 47-80 s here (the first run ~4 min: JAX compiles, then caches)
	$(BIN)/python -m pytest -m "not slow and not heavy" $(PYTEST_ARGS)

# The browser tests drive Debian's headless Chromium through Selenium (chromium-driver).
browser:  ## install Debian's chromium and chromium-driver for the browser tests (apt; as root)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && { echo "chromium and chromedriver are installed"; exit 0; }; \
	if [ "$$(id -u)" != 0 ]; then echo "make browser: run as root (apt-get install chromium chromium-driver)" >&2; exit 1; fi; \
	DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null && echo "installed chromium and chromium-driver"

lint: $(STAMP)  ## ruff (the core may not import Prefect)
	$(BIN)/ruff check alcore sources store tasks oracles flows runtime tests benchmarks

sweep: $(STAMP)  ## the default sweep: 10 seeds x 6 strategies on a local Dask cluster (ARGS to change)
	$(BIN)/python -m flows.sweep $(ARGS)

bench: $(STAMP)  ## the speed benchmark (JSON in artifacts/benchmark.json)
	$(BIN)/python -m benchmarks.run $(ARGS)

soak: $(STAMP)  ## 20 smoke runs through one worker on a fresh server (JSON in artifacts/soak.json)
	$(BIN)/python -m benchmarks.soak $(ARGS)

# ---------------------------------------------------------------- run on a schedule
# make server [PORT=4200] [HOST=127.0.0.1] [AUTH=user:password] [DB=sqlite|postgres]
# Give deploy, worker, ui and stop the same PORT/HOST/SERVER_HOME as the server.
PORT ?= 4200
HOST ?= 127.0.0.1
# Basic-auth credential: required when HOST is not a loopback address. make server
# records it (SERVER_HOME/auth, mode 600) for deploy and worker. Taken verbatim (a `$`
# in it is not a make variable) from the command line or the environment (AUTH, else
# PREFECT_SERVER_API_AUTH_STRING); recipes read it from their environment, never from
# their command line, so it does not show in the process list.
AUTH_RAW := $(if $(filter undefined,$(origin AUTH)),$(value PREFECT_SERVER_API_AUTH_STRING),$(value AUTH))
override AUTH := $(AUTH_RAW)
export AUTH
DB ?= sqlite
SERVER_HOME ?= $(CURDIR)/.prefect-server
PG_DATA ?= $(SERVER_HOME)/pg
STOP_TIMEOUT ?= 30
POOL := bal-pool
# Clients reach a server that listens on every address (0.0.0.0, ::) through loopback.
CLIENT_HOST = $(if $(filter 0.0.0.0,$(HOST)),127.0.0.1,$(if $(filter ::,$(HOST)),[::1],$(if $(findstring :,$(HOST)),[$(HOST)],$(HOST))))
SERVER_URL = http://$(CLIENT_HOST):$(PORT)
# The API address the UI's browser code calls: set it to a name other machines can
# resolve when they open the UI of an exposed server.
UI_API_URL ?= $(SERVER_URL)/api
LOOPBACK = $(filter 127.% localhost ::1,$(HOST))
SERVICE = $(SHELL) ops/service.sh
# Deployment concurrency slots are held under leases. Prefect keeps them in memory by
# default: a server restart then loses the lease of a run that died unrecorded (its
# worker SIGKILLed), and its slot is never freed: the deployment's runs wait forever
# (seen with 3.8.8). In files (SERVER_HOME/concurrency_leases) the lease survives a
# restart, expires 5 minutes after the run stopped renewing it, and the slot is freed.
LEASE_STORAGE = prefect.server.concurrency.lease_storage.filesystem
PREFECT_BIN = $(CURDIR)/$(BIN)/prefect

# The environment of a client of the server: its URL and, if it has one, the
# credential (AUTH, else the one make server recorded), then a check that the server
# answers and accepts it. Secrets stay out of command lines (make exports AUTH).
CLIENT = export PREFECT_API_URL=$(SERVER_URL)/api; \
	if [ -n "$$AUTH" ]; then PREFECT_API_AUTH_STRING=$$AUTH; \
	elif [ -s $(SERVER_HOME)/auth ]; then PREFECT_API_AUTH_STRING=$$(cat $(SERVER_HOME)/auth); fi; \
	if [ -n "$${PREFECT_API_AUTH_STRING:-}" ]; then export PREFECT_API_AUTH_STRING; fi; \
	if ! curl -s -o /dev/null --max-time 5 $(SERVER_URL)/api/health; then \
		echo "no Prefect server answers at $(SERVER_URL): start one with make server (same PORT/HOST)" >&2; exit 1; fi; \
	code=$$(printf 'header = "Authorization: Basic %s"\n' "$$(printf %s "$${PREFECT_API_AUTH_STRING:-}" | base64 | tr -d '\n')" \
		| curl -s -K - -o /dev/null -w '%{http_code}' --max-time 5 $(SERVER_URL)/api/admin/version); \
	if [ "$$code" = 401 ] && [ -z "$${PREFECT_API_AUTH_STRING:-}" ]; then \
		echo "the server at $(SERVER_URL) wants a credential (401): AUTH=user:password, the one it was started with" >&2; exit 1; \
	elif [ "$$code" = 401 ]; then \
		echo "the server at $(SERVER_URL) refused the credential (401): AUTH=user:password, the one it was started with" >&2; exit 1; fi

server: $(STAMP)  ## start a Prefect server with its UI on $(HOST):$(PORT) (AUTH=user:pw, DB=postgres)
	@set -e; \
	if [ -z "$(LOOPBACK)" ] && [ -z "$$AUTH" ]; then \
		echo "make server: refusing HOST=$(HOST) without AUTH: the API would be open, unauthenticated," >&2; \
		echo "to every machine that can reach this one. Give it a credential (clients then send it" >&2; \
		echo "as PREFECT_API_AUTH_STRING; make deploy and make worker do):" >&2; \
		echo "    make server HOST=$(HOST) AUTH=user:password" >&2; \
		echo "or keep the default HOST=127.0.0.1 (this machine only)." >&2; \
		exit 2; fi; \
	case "$(DB)" in sqlite|postgres) ;; \
		*) echo "make server: DB=$(DB) is not a choice: DB=sqlite (default) or DB=postgres" >&2; exit 2;; esac; \
	mkdir -p $(SERVER_HOME); \
	if $(SERVICE) running server $(SERVER_HOME)/server.pid; then \
		echo "server already running: $(SERVER_URL) (make stop first to change its settings)"; exit 0; fi; \
	rc=0; curl -s -o /dev/null --max-time 3 http://$(CLIENT_HOST):$(PORT)/ || rc=$$?; \
	if [ $$rc != 7 ]; then \
		echo "make server: something already listens on $(CLIENT_HOST):$(PORT) (another server?); choose another PORT=" >&2; exit 1; fi; \
	if [ "$(DB)" = postgres ]; then \
		$(SHELL) ops/postgres.sh start "$(PG_DATA)"; \
		PREFECT_SERVER_DATABASE_CONNECTION_URL=$$($(SHELL) ops/postgres.sh url "$(PG_DATA)"); \
		export PREFECT_SERVER_DATABASE_CONNECTION_URL; database="PostgreSQL in $(PG_DATA)"; \
	else database="SQLite in $(SERVER_HOME)/prefect.db"; fi; \
	if [ -n "$$AUTH" ]; then \
		(umask 077; printf '%s\n' "$$AUTH" > $(SERVER_HOME)/auth); \
		PREFECT_SERVER_API_AUTH_STRING=$$AUTH; export PREFECT_SERVER_API_AUTH_STRING; \
	else rm -f $(SERVER_HOME)/auth; fi; \
	PREFECT_HOME=$(SERVER_HOME) PREFECT_UI_API_URL=$(UI_API_URL) PREFECT_SERVER_ANALYTICS_ENABLED=false \
		PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=$(LEASE_STORAGE) \
		$(SERVICE) start server $(SERVER_HOME)/server.pid $(SERVER_HOME)/server.log \
		$(PREFECT_BIN) server start --host $(HOST) --port $(PORT); \
	i=0; until curl -sf -o /dev/null --max-time 2 $(SERVER_URL)/api/health; do \
		if ! $(SERVICE) running server $(SERVER_HOME)/server.pid; then \
			echo "server exited; the end of $(SERVER_HOME)/server.log:" >&2; tail -n 20 $(SERVER_HOME)/server.log >&2; exit 1; fi; \
		i=$$((i + 1)); if [ $$i -ge 240 ]; then \
			echo "server not healthy after 120 s, still starting? see $(SERVER_HOME)/server.log; make stop stops it" >&2; exit 1; fi; \
		sleep 0.5; done; \
	echo "server up: $(SERVER_URL) (listening on $(HOST); $$database; log: $(SERVER_HOME)/server.log)"; \
	if [ -n "$$AUTH" ]; then echo "clients need PREFECT_API_AUTH_STRING (make deploy and make worker send the one given)"; fi

# Schedules are opt-in: make deploy creates none (and removes any an earlier deploy
# made: prefect.yaml's `schedules: []` with Prefect's setting that clears them, which
# its next releases make the default); SCHEDULES=smoke turns on the smoke deployment's hourly schedule,
# SCHEDULES=nightly the nightly one's (03:00 UTC), SCHEDULES="smoke nightly" both.
SCHEDULES ?=

deploy: $(STAMP)  ## create the work pool and apply prefect.yaml's deployments (no schedule; SCHEDULES=smoke: hourly)
	@$(CLIENT); \
	for s in $(SCHEDULES); do case $$s in smoke|nightly) ;; \
		*) echo "make deploy: SCHEDULES=$$s is not a choice: smoke (hourly), nightly (03:00 UTC), or both" >&2; exit 2;; \
		esac; done; \
	$(PREFECT_BIN) work-pool create $(POOL) --type process --overwrite && \
	PREFECT_DEPLOYMENTS_CLEAR_SCHEDULES_ON_EMPTY=true $(PREFECT_BIN) --no-prompt deploy --all || exit $$?; \
	for s in $(SCHEDULES); do \
		if [ $$s = smoke ]; then \
			$(PREFECT_BIN) --no-prompt deployment schedule create active-learning/smoke --interval 3600 --replace -y \
				>/dev/null && echo "schedule on: active-learning/smoke, every hour" || exit $$?; \
		else \
			$(PREFECT_BIN) --no-prompt deployment schedule create active-learning/nightly --cron "0 3 * * *" \
				--timezone UTC --replace -y >/dev/null && echo "schedule on: active-learning/nightly, 03:00 UTC" || exit $$?; \
		fi; done

# The worker asks the server for runs every WORKER_POLL seconds (Prefect's default is
# 10): a human-oracle run that was answered waits for that before it continues.
WORKER_POLL ?= 2

worker: $(STAMP)  ## start a worker for the pool (runs the scheduled flows; WORKER_POLL=2 s)
	@mkdir -p $(SERVER_HOME); $(CLIENT); \
	PREFECT_WORKER_QUERY_SECONDS=$(WORKER_POLL) $(SERVICE) start worker $(SERVER_HOME)/worker.pid \
		$(SERVER_HOME)/worker.log $(PREFECT_BIN) worker start --pool $(POOL)

ui:  ## print (and try to open) the UI's address
	@echo "Prefect UI: $(SERVER_URL)"; (command -v xdg-open >/dev/null && xdg-open $(SERVER_URL) >/dev/null 2>&1) || true

# The worker's flow runs first (SIGTERM: each records itself Crashed, "aborted by a
# termination signal", and frees its deployment's concurrency slot; a worker stopping
# first would kill them unrecorded, left Running), then the worker (SIGINT: it ignores
# SIGTERM while it runs flows), then the idle standbys of suspended runs (asked to
# leave), then the server, then PostgreSQL. Each is waited for
# (STOP_TIMEOUT seconds, then SIGKILL); the exit status says whether all is gone.
stop:  ## stop the worker, the server and its PostgreSQL; wait until they are gone
	@status=0; \
	$(SERVICE) stop worker $(SERVER_HOME)/worker.pid INT $(STOP_TIMEOUT) TERM || status=1; \
	if [ -x $(BIN)/python ]; then $(BIN)/python -m runtime.standby --dismiss || status=1; fi; \
	$(SERVICE) stop server $(SERVER_HOME)/server.pid TERM $(STOP_TIMEOUT) || status=1; \
	if [ -f $(PG_DATA)/PG_VERSION ]; then $(SHELL) ops/postgres.sh stop $(PG_DATA) $(STOP_TIMEOUT) || status=1; fi; \
	if [ $$status = 0 ]; then echo "nothing left running"; \
	else echo "make stop: not everything stopped (see above)" >&2; fi; \
	exit $$status

clean:  ## remove the environment and outputs
	rm -rf $(VENV) artifacts .pytest_cache
