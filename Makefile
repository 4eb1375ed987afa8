# The two commands (README): `make demo` trains the default model and writes its report; `make test` runs
# the whole test suite. Both create or reuse the project-local virtual environment in .venv first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
# Use the data beside the checkout when it is there (CI, this workplace); otherwise aelab's own discovery.
ifneq ($(wildcard ../shared/data/fashion-mnist),)
export AELAB_DATA_DIR ?= $(abspath ../shared/data)
endif

.PHONY: demo test lint setup browser postgres bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

# Debian's Chromium for the report's browser test (Playwright drives /usr/bin/chromium; no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: could not install chromium; the browser test will be skipped"; }

# Debian's PostgreSQL server for the shared-study tests (each test starts its own server in a temporary folder).
postgres:
	@{ command -v initdb || ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 || { \
	  echo "installing Debian's postgresql for the shared-study tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	  || echo "warning: could not install postgresql; the PostgreSQL tests will be skipped"; }

demo: $(STAMP)
	$(VENV)/bin/aelab train --preset default

test: $(STAMP) browser postgres
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
