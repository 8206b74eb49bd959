# Two commands do everything on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.credo-installed

.PHONY: setup demo test test-fast test-integration bench clean

setup: $(STAMP)

# torch is pinned to the CPU build that lies on disk; an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[all]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/credo demo

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not integration"

test-integration: setup
	$(PY) -m pytest -q -m integration

bench: setup
	$(PY) bench/cache_vs_prompt.py

clean:
	rm -rf $(VENV) layers/demo .pytest_cache
