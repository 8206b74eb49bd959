# Two commands do everything on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.credo-installed

.PHONY: setup constraints browser lint llama-server demo test test-fast test-integration bench bench-all results clean

setup: $(STAMP)

# torch is pinned to the CPU build that lies on disk; an unpinned torch would pull a multi-GB CUDA build.
# constraints.txt holds the versions the tests passed with, so a fresh install gets exactly those.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[all]'
	touch $(STAMP)

# After a deliberate upgrade that passed `make test`: record what is installed as the new constraints.
constraints:
	( echo "# The versions make test passed with (pip freeze of .venv). make installs with -c constraints.txt; refresh with make constraints."; \
	  $(PIP) freeze --exclude-editable | sed 's/+cpu$$//' ) > constraints.txt

demo: setup
	$(VENV)/bin/credo demo

# The playground test drives Debian's headless Chromium; install it where we can (root + apt), else that test skips.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "note: chromium + chromium-driver not installed; the playground browser test will be skipped"; fi

# The layering and the style are part of the tests: imports only run downward (pyproject's import-linter contracts).
lint: setup
	$(PY) -m ruff check src tests bench
	$(VENV)/bin/lint-imports

# llama.cpp's llama-server, built from the llama.cpp that llama-cpp-python vendors (CPU, portable x86-64; skipped once built).
llama-server: setup
	scripts/build-llama-server.sh $(VENV)

test: setup browser lint llama-server
	$(PY) -m pytest -q

test-fast: setup llama-server
	$(PY) -m pytest -q -m "not integration"

test-integration: setup
	$(PY) -m pytest -q -m integration

bench: setup
	$(PY) bench/cache_vs_prompt.py

bench-all: setup
	$(PY) bench/cache_vs_prompt.py
	$(PY) bench/compile.py
	$(PY) bench/hyper.py
	$(PY) bench/serve.py
	$(PY) bench/data.py

# bench/RESULTS.md: the latest run of each benchmark, curated from the raw output in bench/results/.
results:
	$(PY) bench/curate.py

clean:
	rm -rf $(VENV) layers/demo .pytest_cache
