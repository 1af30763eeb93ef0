# Fresh clone, fresh machine: `make demo` and `make test` are all you need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A hung test run fails after 40 minutes instead of holding CI (where `timeout` exists).
TEST_TIMEOUT := $(shell command -v timeout >/dev/null 2>&1 && echo "timeout -k 60 2400")

.PHONY: demo test install install-dev lint typecheck clean

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

# oneDNN picks CPU kernels by instruction set: what trains convolutions (the loop, the supernet,
# export after training) runs a second time on the AVX2 kernels, which every x86 CPU can take.
# Export tests of untrained networks (forward passes only) and the supernet's kill-and-resume
# (the same training as tests/supernet's others, in a subprocess) run once.
AVX2_TESTS := tests/supernet tests/evaluators/test_cpu_kernels.py tests/evaluators/test_loop.py \
	tests/evaluators/test_training.py tests/cellblock/test_final_train.py \
	tests/cellblock/test_export.py::test_reexport_after_train_is_refused_then_replaces_the_directory_whole \
	tests/cellblock/test_export_deploy.py::test_raw_data_fed_to_every_format_gets_the_trained_accuracy \
	--deselect tests/supernet/test_cli.py::test_sigkill_then_resume_matches_an_uninterrupted_run

# --dist load: a test whose worker dies natively fails alone (with its signal, see
# tests/conftest.py) and a new worker takes the rest; pyproject.toml sets a per-test timeout
# (pytest-timeout), so a stuck test fails too.
test: install-dev
	$(TEST_TIMEOUT) $(BIN)/python -m pytest -q -n 2 --dist load
	ONEDNN_MAX_CPU_ISA=AVX2 $(TEST_TIMEOUT) $(BIN)/python -m pytest -q -n 2 --dist load $(AVX2_TESTS)

lint: install-dev
	$(BIN)/ruff check .

# mypy on the packages listed in pyproject.toml's [tool.mypy] files
typecheck: install-dev
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info
