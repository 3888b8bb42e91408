# Quick start: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

LOCK := requirements/dev.txt

.PHONY: install test demo lint bench clean lock system-deps

# Exactly the pinned versions, each checked against its hash (requirements/lock.py); the
# project itself editable on top, built with the locked setuptools (no build isolation).
$(STAMP): pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "crmhub needs Python >= 3.11 (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP)

# After changing dependencies in pyproject.toml: re-pin every lock file (needs the registry).
lock: $(STAMP)
	$(PY) requirements/lock.py

# Debian packages the tests start: stunnel, the TLS endpoint in front of the test broker.
system-deps:
	@command -v stunnel4 >/dev/null || command -v stunnel >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stunnel4; \
		else echo "the tests need stunnel: apt-get install stunnel4 (as root)"; exit 1; fi; }

test: $(STAMP) system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/crmhub demo $(if $(ONCE),--once,)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Every benchmark case in one run; N sizes the peak-rate input (docs/performance.md).
bench: $(STAMP)
	$(PY) -m benchmarks.run $(if $(N),--events $(N),)

clean:
	rm -rf $(VENV) var .pytest_cache
