# One entry point for people and CI: `make up` runs the stack, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install up test lint typecheck unit bench check-config clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

up: install
	$(BIN)/gateway serve --config $${GATEWAY_CONFIG:-config.example.yaml}

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

unit: install
	$(BIN)/pytest -m unit

bench: install
	$(BIN)/python -m bench.gateway

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
