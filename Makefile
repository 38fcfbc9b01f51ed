# Two environments, because fakesnow (the emulator's SQL engine) cannot be imported
# next to connector 5.x:
#   .venv   connector 4.8.x + fakesnow + dev tools; runs the emulator for both
#   .venv5  connector 5.x as a client only
PYTHON ?= python3
VENV := .venv
VENV5 := .venv5
PY4 := $(VENV)/bin/python
PY5 := $(VENV5)/bin/python
STAMP4 := $(VENV)/.installed
STAMP5 := $(VENV5)/.installed
CONNECTOR4 := snowflake-connector-python[pandas]>=4.8,<4.9
CONNECTOR5 := snowflake-connector-python>=5.2,<6
PYTEST_ARGS ?=

.PHONY: all setup demo test test4 test5 coverage test-live lint bench soak random-soak clean

all: test

setup: $(STAMP4) $(STAMP5)

$(STAMP4): pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "asyncsession needs Python >= 3.11; run make PYTHON=python3.11 ..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY4) -m pip install -q --disable-pip-version-check -e '.[testing,pandas,fastapi,dev]' '$(CONNECTOR4)'
	touch $@

$(STAMP5): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV5)
	$(PY5) -m pip install -q --disable-pip-version-check -e '.[pandas,fastapi,dev]' '$(CONNECTOR5)'
	touch $@

demo: $(STAMP4)
	$(PY4) examples/fanout.py

LINT_PATHS := src tests examples $(wildcard benchmarks)

lint: $(STAMP4)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy

# Each suite runs under coverage (branch; config in pyproject.toml); `make coverage`
# combines both generations' data (Connector4 runs only on 4.x, Connector5 only on 5.x)
# and fails under the gate.
test4: $(STAMP4)
	$(PY4) -m coverage run -m pytest $(PYTEST_ARGS)

# The 5.x client talks to the emulator run by the 4.x environment's Python.
test5: $(STAMP4) $(STAMP5)
	ASYNCSESSION_EMULATOR_PYTHON=$(CURDIR)/$(PY4) $(PY5) -m coverage run -m pytest $(PYTEST_ARGS)

coverage: $(STAMP4)
	$(PY4) -m coverage combine -q
	$(PY4) -m coverage report

# The two generations' suites run at once (2 cores: each mostly waits on its emulator);
# each one's output is printed as a block when it ends.
test: lint
	$(PY4) -m coverage erase
	$(MAKE) -j2 --output-sync=target test4 test5
	$(MAKE) coverage

# Live mode: the suite against a real account, a connections.toml connection, on both
# generations; tests marked emulator_only (or using the emulator) are skipped. What it
# covers: docs/live-testing.md. Without CONNECTION it says so and does nothing.
CONNECTION ?=
test-live: $(STAMP4) $(STAMP5)
	@if [ -z "$(CONNECTION)" ]; then \
		echo "test-live: no CONNECTION given (make test-live CONNECTION=name); skipped"; \
	else \
		status=0; \
		$(PY4) -m pytest --snowflake-connection '$(CONNECTION)' -rs $(PYTEST_ARGS) || status=1; \
		$(PY5) -m pytest --snowflake-connection '$(CONNECTION)' -rs $(PYTEST_ARGS) || status=1; \
		exit $$status; \
	fi

# Soak (slow profile): SOAK_SECONDS of mixed work per backend (asyncio, trio) and per
# connector generation, then threads, fds, RSS and server sessions against the baseline.
# Both generations run (and print their figures) even if the first fails. The -m given
# here overrides addopts' -m 'not slow'.
SOAK_SECONDS ?= 300
SOAK_PYTEST := -m pytest -m soak -s tests/reliability/test_soak.py $(PYTEST_ARGS)
soak: $(STAMP4) $(STAMP5)
	@status=0; \
	echo "soak, connector 4.x: $(SOAK_SECONDS) s per backend"; \
	ASYNCSESSION_SOAK_SECONDS=$(SOAK_SECONDS) $(PY4) $(SOAK_PYTEST) || status=1; \
	if [ -x $(PY5) ]; then \
		echo "soak, connector 5.x: $(SOAK_SECONDS) s per backend"; \
		ASYNCSESSION_SOAK_SECONDS=$(SOAK_SECONDS) ASYNCSESSION_EMULATOR_PYTHON=$(CURDIR)/$(PY4) \
			$(PY5) $(SOAK_PYTEST) || status=1; \
	else echo "no 5.x environment; soak on 5.x skipped"; fi; \
	exit $$status

# Random cancellation, slow profile: 1,000 seeded rounds per backend (asyncio, trio) per
# executor path per connector generation (~2 min each). "-m slow" alone selects the soak too.
# ASYNCSESSION_SEED=<seed> reproduces a failure's plan.
RANDOM_SOAK_PYTEST := -m pytest -m "slow and not soak" -s \
	tests/reliability/test_random_cancellation.py $(PYTEST_ARGS)
random-soak: $(STAMP4) $(STAMP5)
	@status=0; \
	echo "random cancellation, 1,000 rounds, connector 4.x"; \
	$(PY4) $(RANDOM_SOAK_PYTEST) || status=1; \
	if [ -x $(PY5) ]; then \
		echo "random cancellation, 1,000 rounds, connector 5.x"; \
		ASYNCSESSION_EMULATOR_PYTHON=$(CURDIR)/$(PY4) $(PY5) $(RANDOM_SOAK_PYTEST) || status=1; \
	else echo "no 5.x environment; random cancellation on 5.x skipped"; fi; \
	exit $$status

# Benchmarks against the peers on the emulator; writes benchmarks/RESULTS.md and plots.
BENCH_ARGS ?=
bench: $(STAMP4) $(STAMP5)
	$(PY4) -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(VENV5) build *.egg-info src/*.egg-info .mypy_cache .ruff_cache .coverage .coverage.*
