# Two entry points: `make run` and `make test`. Both create .venv when it is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Pinned CPU build of torch (an unpinned torch pulls a multi-GB CUDA build).
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Local use: accept catalogue writes without an API key unless the caller says otherwise.
run: $(STAMP)
	SINGER_ALLOW_UNAUTHENTICATED_WRITES=$${SINGER_ALLOW_UNAUTHENTICATED_WRITES:-true} $(PY) -m service

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Heavy benchmarks, not part of `make test` (see README: Benchmarks).
bench: $(STAMP)
	$(PY) bench/bench_indexer.py
	$(PY) bench/bench_service.py
	$(PY) bench/bench_voice.py

clean:
	rm -rf $(VENV) .pytest_cache
