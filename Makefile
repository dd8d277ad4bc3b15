# Two commands on a fresh machine (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint system-deps benchmark clean

$(BIN)/workbook: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

setup: $(BIN)/workbook  ## a virtualenv with the package and its test tools
	@# The package's bytecode: where PYTHONDONTWRITEBYTECODE is set (containers, CI), every
	@# process and kernel would compile it again, 0.15-0.3 s each (docs/performance.md).
	@$(BIN)/python -m compileall -q lib

demo: setup  ## run the high-latency workbook on its bundled demo incident, offline
	$(BIN)/workbook demo

system-deps:  ## Debian's prometheus, promtool and prometheus-alertmanager for the real-service tests
	scripts/install-system-deps

lint: setup  ## ruff, and the notebook contract on every runbook (workbook lint)
	$(BIN)/ruff check lib tests scripts benchmarks
	$(BIN)/ruff format --check lib tests scripts benchmarks
	$(BIN)/workbook lint

# The suite on pytest-xdist workers, a test file each: one more worker than cores (at most 4),
# as a good part of the suite waits on real time (a tmpfs filling, a lock pile-up, a storm
# spread over 30 s) and leaves its core to the others. The longest files go first, in the
# order tests/conftest.py gives them (LONGEST_FILES). Then the tests that measure this host's
# CPU, alone: a test beside them would be the busy neighbour they look for. Both parts always
# run; the exit status is the last failure's.
TEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; print(min(len(os.sched_getaffinity(0)) + 1, 4))')

test: setup system-deps lint  ## every test: units, notebooks as stored (nbval), end to end on a real Prometheus
	@status=0; \
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not alone" || status=$$?; \
	$(BIN)/pytest -m alone || status=$$?; \
	exit $$status

benchmark: setup system-deps  ## issue 12's numbers: cold/warm runs against the floor, reading commands, artifact, storm
	$(BIN)/python benchmarks/speed.py

clean:
	rm -rf $(VENV) archive .pytest_cache
