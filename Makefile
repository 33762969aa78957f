# Everything runs from the project's own virtual environment, created on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: run test test-fast lint perf clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)  ## serve the API on http://127.0.0.1:8000 with an embedded database and demo data
	SHOP_DEMO_DATA=$${SHOP_DEMO_DATA:-true} $(BIN)/shop serve

test: $(STAMP)  ## the whole test suite (embedded database unless SHOP_MONGODB_URL is set)
	$(BIN)/pytest

test-fast: $(STAMP)  ## everything but the tests marked slow, in under a minute
	$(BIN)/pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests perf
	$(BIN)/ruff format --check src tests perf
	$(BIN)/mypy

perf: $(STAMP)  ## k6 load test against a freshly started service
	$(BIN)/python perf/run.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
