# Two commands matter: `make demo` runs the product, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test lint unit integration bench clean

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

test: lint  ## install, lint, type-check, then the whole suite (unit + integration)
	$(BIN)/pytest $(PYTEST_ARGS)

unit: $(VENV)/.installed
	$(BIN)/pytest --ignore=tests/integration $(PYTEST_ARGS)

integration: $(VENV)/.installed
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(BIN)/python -m bench.proxy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .drawbridge
