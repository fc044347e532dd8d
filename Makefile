# Two entry points: `make run` and `make test`. Both create .venv when it is missing, from the
# lock file (requirements/lock.txt: the set of versions that passed CI).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements/lock.txt
SERVICE_LOCK := requirements/service.txt
# pip-compile: the CPU build of torch, no index URLs or local paths written into the locks.
COMPILE := $(PY) -m piptools compile -q --strip-extras --no-header --allow-unsafe \
	--no-emit-index-url --no-emit-find-links --no-emit-trusted-host -c requirements/torch.txt

.PHONY: run test lint types check system-deps lock bench fuzz clean

$(STAMP): pyproject.toml $(LOCK) requirements/no-deps.txt requirements/speaker.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Pinned CPU build of torch first (an unpinned torch pulls a multi-GB CUDA build).
	$(PY) -m pip install -q -r requirements/torch.txt
	$(PY) -m pip install -q -r $(LOCK)
	$(PY) -m pip install -q --no-deps -r requirements/no-deps.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

# Local use: accept catalogue writes without an API key unless the caller says otherwise.
run: $(STAMP)
	SINGER_ALLOW_UNAUTHENTICATED_WRITES=$${SINGER_ALLOW_UNAUTHENTICATED_WRITES:-true} $(PY) -m service

# System packages first (Chromium, nginx: installed when running as root, else reported).
# Three workers on two cores: many tests wait on servers, browsers and subprocesses; a file's
# tests stay on one worker (module fixtures, order within a file).
test: $(STAMP) system-deps
	$(PY) -m pytest -q -n 3 --dist loadfile $(PYTEST_ARGS)

system-deps:
	@scripts/system-deps.sh

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

types: $(STAMP)
	$(PY) -m mypy

# What CI runs before the tests (and what .pre-commit-config.yaml runs on commit).
check: lint types

# Refresh the locks from pyproject.toml: the test environment (dev, which holds eval and
# scale) and the service's; the `train` extra is pinned by hand in requirements/no-deps.txt.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q pip-tools
	$(COMPILE) --extra dev -o $(LOCK) pyproject.toml
	$(COMPILE) -o $(SERVICE_LOCK) pyproject.toml
	# torch==X matches the +cpu build where the index has it; the project itself is not locked.
	sed -i -E -e 's/^(torch==[^+]+)\+cpu$$/\1/' -e '/^singer-retrieval @ /d' $(LOCK) $(SERVICE_LOCK)

# Heavy benchmarks, not part of `make test` (see README: Benchmarks).
bench: $(STAMP)
	$(PY) bench/bench_indexer.py
	$(PY) bench/bench_service.py
	$(PY) bench/bench_voice.py

# Long schemathesis run (>= 20k requests) against a live server; see service/README.md.
fuzz: $(STAMP)
	$(PY) -m tests.support.fuzz --requests $${FUZZ_REQUESTS:-20000}

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache
