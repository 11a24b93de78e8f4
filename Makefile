# Entry points. Each target sets up what it needs, idempotently:
#   make demo   - set up everything, boot the guest and run the main job
#   make test   - set up everything and run the test suite
# Build outputs are cached under ~/.cache/sds (override with SDS_CACHE).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VENV_STAMP := $(VENV)/.installed
TESTBED := $(VENV)/bin/testbed
SDS_CACHE ?= $(HOME)/.cache/sds
HK_BUILD ?= $(SDS_CACHE)/hyperkernel/build
PYTEST_ARGS ?=
NIGHTLY_SUITE ?= suites/nightly.toml
SUITE_ARGS ?=

.PHONY: all setup system venv build images qemu hyperkernel demo test test-python \
        test-hyperkernel lint bench-coherence nightly smoke report check clean help

all: build

help:
	@echo "make demo             set up everything, boot the guest, run the main job"
	@echo "make test             set up everything and run the test suite (CI runs this)"
	@echo "make check            the quick tier: lint, unit tests, simulation, one 2-node boot"
	@echo "make build            build QEMU, the guest images and the hyperkernel"
	@echo "make lint             ruff and mypy"
	@echo "make bench-coherence  hyperkernel coherence benchmark"
	@echo "make nightly          the nightly suite into the results store, compared with history,"
	@echo "                      then the long test tier"
	@echo "make smoke            the smoke suite (a few minutes) into the results store"
	@echo "make report           reports/nightly.html: the last nightly run against the ones before"

system:
	@sh tools/setup-system.sh

$(VENV_STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/pip install -q --disable-pip-version-check --upgrade pip
	@$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

venv: $(VENV_STAMP)

setup: system venv

hyperkernel: system
	@if [ -f hyperkernel/Makefile ]; then $(MAKE) -s -C hyperkernel O=$(HK_BUILD) all; fi

qemu images build: setup hyperkernel
	@$(TESTBED) build

demo: build
	@$(TESTBED) demo

test-hyperkernel: hyperkernel
	@if [ -f hyperkernel/Makefile ]; then $(MAKE) -s -C hyperkernel O=$(HK_BUILD) test; fi

test-python: build
	@$(VENV)/bin/pytest -q -m "not nightly" $(PYTEST_ARGS)

lint: venv
	@$(VENV)/bin/ruff check testbed tests
	@$(VENV)/bin/mypy

test: build lint test-hyperkernel test-python

# The quick tier for every change (under 5 minutes warm; about 1.5 on a quiet
# machine): lint, the library's unit tests and 1000 simulation seeds, the Python
# tests that boot nothing, and one 2-node boot running one workload (code
# rewritten across nodes). The library's tests (CPU-bound C) run beside the
# Python tests, which spend half their time waiting on subprocesses and run in
# two workers; the library's output is shown after theirs, so the two never mix.
CHECK_HK_LOG := $(HK_BUILD)/check.log
check: build lint
	@mkdir -p $(HK_BUILD); \
	$(MAKE) -s -C hyperkernel O=$(HK_BUILD) unit sim SEEDS=1000 > $(CHECK_HK_LOG) 2>&1 & hk=$$!; \
	$(VENV)/bin/pytest -q -n 2 -m "not boot and not nightly" $(PYTEST_ARGS); py=$$?; \
	wait $$hk; hkst=$$?; \
	if [ $$hkst -eq 0 ]; then echo "hyperkernel: $$(grep -c ' passed, 0 failed' $(CHECK_HK_LOG)) unit" \
		"test programs passed; simulation: $$(tail -n 1 $(CHECK_HK_LOG))"; else cat $(CHECK_HK_LOG); \
		echo "make check: the hyperkernel's unit tests or simulation failed (log: $(CHECK_HK_LOG))"; fi; \
	[ $$py -eq 0 ] && [ $$hkst -eq 0 ]
	@$(VENV)/bin/pytest -q tests/test_stale_translations.py $(PYTEST_ARGS)

bench-coherence: hyperkernel
	@$(MAKE) -s -C hyperkernel O=$(HK_BUILD) bench-coherence

# Every step runs even if one fails (a failing cell must not hide a regression); the
# status is non-zero if any failed. The simulation runs a new range of seeds each
# day (the day number picks it; SIM_FIRST overrides), so nights add coverage rather
# than repeat it: 250k seeds take about 15 minutes on 2 cores. Results stay in the
# store ($$SDS_STORE or ~/.local/share/sds/results.sqlite).
nightly: build
	@status=0; \
	$(TESTBED) suite run $(NIGHTLY_SUITE) $(SUITE_ARGS) || status=1; \
	$(TESTBED) suite compare --suite nightly --allow-no-history || status=1; \
	$(VENV)/bin/pytest -q -m nightly $(PYTEST_ARGS) || status=1; \
	seeds=$${SIM_SEEDS:-250000}; first=$${SIM_FIRST:-$$(( $$(date -u +%s) / 86400 * seeds + 1 ))}; \
	echo "simulation: seeds $$first.. ($$seeds; replay one with make -C hyperkernel sim SEED=s)"; \
	$(MAKE) -s -C hyperkernel O=$(HK_BUILD) sim SEEDS=$$seeds FIRST=$$first || status=1; \
	exit $$status

smoke: build
	@$(TESTBED) suite run suites/smoke.toml $(SUITE_ARGS)

report: venv
	@$(TESTBED) report --suite nightly --base history --new latest -o reports/nightly.html

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
