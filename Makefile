# Two commands matter: `make demo` runs the product, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# pytest-xdist workers for the suite, a test file on one worker (README, "Running the tests");
# TEST_WORKERS=0 runs every test in one process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test lint unit integration units bench bench-tools clean system-packages node-packages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

# Debian packages some tests drive: chromium + chromium-driver for the console's browser
# tests (Playwright never downloads a browser) and nginx for the front-proxy tests
# (config/nginx.conf). Installed when missing and we are root with apt-get; otherwise those
# tests skip with a message saying so (and fail under CI=true).
system-packages:
	@missing=""; \
	[ -x $(CHROMIUM) ] || missing="$$missing chromium chromium-driver"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else echo "note: missing Debian packages:$$missing; the tests that need them will skip"; fi

# npm packages of the independent C2PA reader the provenance tests check delivered videos
# with (tests/readers/c2pa-ts: @trustnxt/c2pa-ts, pinned by its package-lock.json), with the
# machine's node and npm. Reinstalled when the lock file changes; no install scripts run.
# Without npm those tests skip with a message saying so (and fail under CI=true).
C2PA_TS := tests/readers/c2pa-ts
node-packages:
	@if ! command -v npm >/dev/null; then \
		echo "note: npm is missing; the independent C2PA reader's tests will skip"; \
	elif [ ! -f $(C2PA_TS)/node_modules/.package-lock.json ] || \
		[ $(C2PA_TS)/package-lock.json -nt $(C2PA_TS)/node_modules/.package-lock.json ]; then \
		cd $(C2PA_TS) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error; fi

demo: $(VENV)/.installed  ## install, then run gateway + simulator on SQLite
	$(BIN)/drawbridge demo

lint: $(VENV)/.installed
	$(BIN)/ruff check keys gateway tests bench
	$(BIN)/ruff format --check keys gateway tests bench
	$(BIN)/mypy

test: lint system-packages node-packages  ## install, lint, type-check, then the whole suite (unit + integration)
	$(PYTEST) $(PYTEST_ARGS)

unit: $(VENV)/.installed
	$(PYTEST) --ignore=tests/integration $(PYTEST_ARGS)

integration: $(VENV)/.installed system-packages node-packages
	$(PYTEST) tests/integration $(PYTEST_ARGS)

# systemd-analyze verify on the shipped units, about a second (also part of `make test`).
units: $(VENV)/.installed
	$(BIN)/pytest -q tests/integration/test_deploy_guide.py -k systemd_units

# The benchmarks' load tool: wrk (Debian package), installed the same way, so the numbers
# come from the same client everywhere. Without it bench/load.py falls back to a threaded
# Python client and every report says so. Also the `bench` extra (granian, which
# `bench.proxy --servers gunicorn,granian` measures against gunicorn) into the virtualenv:
# a benchmark's part, never the product's nor the tests'.
bench-tools: $(VENV)/.installed
	@if command -v wrk >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; \
	else echo "note: wrk is missing; the benchmarks fall back to the Python load client"; fi
	@$(BIN)/python -c 'import granian' 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[bench]'

bench: $(VENV)/.installed bench-tools
	$(BIN)/python -m bench.proxy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .drawbridge $(C2PA_TS)/node_modules
