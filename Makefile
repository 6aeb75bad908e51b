# Everything a fresh machine needs is installed by these targets (Python venv + npm Azurite).
# `make test` is what CI runs (.ci/run); `make run` starts the app locally on embedded defaults.

VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: setup test lint run bench chaos clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed node_modules/.installed

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest -n 2 -q -m "not slow"

run: setup
	$(PY) -m localrun

bench: setup
	$(PY) -m bench

chaos: setup
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache
