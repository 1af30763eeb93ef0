# Fresh clone, fresh machine: `make demo` and `make test` are all you need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A hung test run fails after 40 minutes instead of holding CI (where `timeout` exists).
TEST_TIMEOUT := $(shell command -v timeout >/dev/null 2>&1 && echo "timeout -k 60 2400")

.PHONY: demo test install install-dev lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/cellblock search

# --dist load: a crashed worker's test fails and the rest go on (loadfile re-ran the crashed
# file's tests on each replacement worker, then stopped or sat idle); pyproject.toml sets a
# per-test timeout, so a stuck test fails too.
test: install-dev
	$(TEST_TIMEOUT) $(BIN)/python -m pytest -q -n 2 --dist load

lint: install-dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
