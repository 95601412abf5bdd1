# Carryover: `make run` serves with the embedded SQLite store, `make test` runs the suite,
# `make demo` shows it at work beside simulated tools.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo test browser lint bench clean

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

test: $(STAMP) browser
	$(BIN)/python -m pytest

# The browser tests drive Debian's chromium (Playwright never downloads a browser). Install it
# when it is missing and this machine can (apt-get, as root); otherwise they are skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" -eq 0 ]; then \
	    echo "Installing Debian's chromium for the browser tests"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	        --no-install-recommends chromium; } >/dev/null \
	      || echo "chromium could not be installed: the browser tests will be skipped"; \
	  else \
	    echo "chromium is missing (and apt-get as root is not available): the browser tests will be skipped"; \
	  fi; \
	}

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache
