# Carryover: `make run` serves with the embedded SQLite store, `make test` runs the suite,
# `make demo` shows it at work beside simulated tools. run and demo install the runtime only;
# bench adds the benchmarks' extras, test and lint the test tools.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.installed-runtime
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run demo test browser lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

BENCH_STAMP := $(VENV)/.installed-bench

$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME_STAMP)

# The test extras include the runtime, so both stamps are fresh afterwards.
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(TEST_STAMP) $(RUNTIME_STAMP)

config.yaml:
	cp config.example.yaml config.yaml

run: $(RUNTIME_STAMP) config.yaml
	$(BIN)/carryover db upgrade --config config.yaml
	$(BIN)/carryover serve --config config.yaml

# Carryover beside simulated Zendesk, Salesforce and Twilio, playing the journeys (no account).
# `make demo HISTORY=1`: the tools first hold a year of made-up history, imported with
# `carryover backfill` before the journeys (carryover demo --history).
demo: $(RUNTIME_STAMP)
	$(BIN)/carryover demo $(if $(HISTORY),--history)

test: $(TEST_STAMP) browser
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

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

$(BENCH_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP) $(RUNTIME_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache
