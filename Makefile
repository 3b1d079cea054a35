# Two commands matter: `make demo` runs the product, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test lint unit integration bench clean front-proxy

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

demo: $(VENV)/.installed  ## install, then run gateway + simulator on SQLite
	$(BIN)/drawbridge demo

lint: $(VENV)/.installed
	$(BIN)/ruff check keys gateway tests bench
	$(BIN)/ruff format --check keys gateway tests bench
	$(BIN)/mypy

test: lint front-proxy  ## install, lint, type-check, then the whole suite (unit + integration)
	$(BIN)/pytest $(PYTEST_ARGS)

unit: $(VENV)/.installed
	$(BIN)/pytest --ignore=tests/integration $(PYTEST_ARGS)

integration: $(VENV)/.installed front-proxy
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

front-proxy:  ## nginx for config/nginx.conf (docs/isolation.md), installed if missing (root)
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || \
	  { test "$$(id -u)" = 0 && apt-get install -y -q nginx-light; } || \
	  echo "nginx is missing and cannot be installed here: the front-proxy tests will skip"

bench: $(VENV)/.installed
	$(BIN)/python -m bench.proxy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .drawbridge
