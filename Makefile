# The two set-up commands of the README: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: venv test demo up down lint clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "SLMOps needs Python >= 3.11; run with PYTHON=python3.11 (or newer)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

test: venv
	$(BIN)/python -m pytest -m "not slow"

lint: venv
	$(BIN)/ruff check shared services tests
	$(BIN)/mypy shared services

demo: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" bash deploy/demo.sh

up: venv
	$(BIN)/slmops up

down: venv
	$(BIN)/slmops down

clean:
	rm -rf $(VENV) .slmops .pytest_cache
