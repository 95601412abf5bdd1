# Carryover: `make run` serves with the embedded SQLite store, `make test` runs the suite,
# `make demo` shows it at work beside simulated tools.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

config.yaml:
	cp config.example.yaml config.yaml

run: $(STAMP) config.yaml
	$(BIN)/carryover db upgrade --config config.yaml
	$(BIN)/carryover serve --config config.yaml

# Carryover beside simulated Zendesk, Salesforce and Twilio, playing the journeys (no account).
demo: $(STAMP)
	$(BIN)/carryover demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache
