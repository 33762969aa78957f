# Everything runs from the project's own virtual environment, created on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run test test-fast lint perf clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	@echo "Installing the shop and its tools into $(VENV) (the first time only; a few minutes)..."
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)
	@echo "Installed."

run: $(STAMP)  ## serve the API on http://$(HOST):$(PORT): embedded database, demo data, a dev admin
	SHOP_DEMO_DATA=$${SHOP_DEMO_DATA:-true} SHOP_DEV_ADMIN=$${SHOP_DEV_ADMIN:-true} \
	SHOP_HOST=$(HOST) SHOP_PORT=$(PORT) $(BIN)/shop serve

test: $(STAMP)  ## the whole test suite (embedded database unless SHOP_MONGODB_URL is set)
	$(BIN)/pytest

test-fast: $(STAMP)  ## everything but the tests marked slow, in about a minute
	$(BIN)/pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests perf
	$(BIN)/ruff format --check src tests perf
	$(BIN)/mypy

perf: $(STAMP)  ## k6 load test against a freshly started service
	$(BIN)/python perf/run.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
