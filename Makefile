# The two commands: `make run` (the local train→compress→evaluate→edge-benchmark pipeline on the
# embedded defaults) and `make test`. Both create or reuse .venv and install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgecompress-installed
ARGS ?=
# Two workers (the CI machine has 2 cores; much of the suite waits on child processes and servers).
# Tests that assert a measured speed (marker `latency`) run after them, alone on the machine: measured
# beside a training worker on 2 cores their intervals say more about the neighbour than the model.
PYTEST_ARGS ?= -n 2 --dist loadgroup

.PHONY: setup run test lint compile benchmarks clean

setup: $(STAMP)
	@scripts/system-deps.sh

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip==25.3
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $@

run: setup
	$(BIN)/edgecompress run $(ARGS)

test: setup
	@$(BIN)/python -m pytest $(PYTEST_ARGS) -m "not latency"; parallel=$$?; \
	echo "== tests that assert a measured speed, alone on the machine"; \
	$(BIN)/python -m pytest $(PYTEST_ARGS) -n 0 -m latency; alone=$$?; \
	if [ $$alone -eq 5 ]; then alone=0; fi; \
	test $$parallel -eq 0 -a $$alone -eq 0

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

compile: setup
	$(BIN)/edgecompress compile --all --output-dir compiled/

clean:
	rm -rf $(VENV) edgecompress-runs .pytest_cache
