# Kurable's developer entry points. `make demo` and `make test` do all the set-up
# on a fresh machine: a virtual environment in .venv and the control-plane
# binaries built from source (cached in ~/.cache/kurable/tools by version).

# The newest Python >= 3.11 that actually runs (pyenv shims may exist but fail).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	  $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { command -v $$p; break; }; done)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: all venv tools crds lint test test-fast test-integration chaos demo dev bench clean

all: test

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Kurable needs Python 3.11 or newer on PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP)

tools:
	@hack/tools.sh

# crds/ is generated from the models; the chart ships a copy (tests fail on drift).
CHART_CRDS := charts/kurable/files/crds

crds: $(STAMP)
	$(BIN)/kurable crds --output crds
	rm -f $(CHART_CRDS)/*.yaml
	mkdir -p $(CHART_CRDS)
	cp crds/*.yaml $(CHART_CRDS)/

lint: $(STAMP)
	$(BIN)/ruff check operator tests hack bench
	$(BIN)/ruff format --check operator tests hack bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# Everything: unit tests, integration tests on the real control plane, crash tests.
test: $(STAMP) tools
	$(BIN)/pytest -n 2 $(PYTEST_ARGS)

# Unit tests only: no control plane, a few seconds.
test-fast: $(STAMP)
	$(BIN)/pytest -m 'not integration' $(PYTEST_ARGS)

test-integration: $(STAMP) tools
	$(BIN)/pytest -n 2 -m 'integration and not slow' $(PYTEST_ARGS)

# The chaos suite at release scale: ten minutes of seeded faults over a few hundred
# runs (`make test` runs its short scale). Replay a failure with CHAOS_SEED=<seed>.
CHAOS_SCALE ?= long
CHAOS_SEED  ?= 20261125

chaos: $(STAMP) tools
	KURABLE_CHAOS_SCALE=$(CHAOS_SCALE) KURABLE_CHAOS_SEED=$(CHAOS_SEED) \
	  $(BIN)/pytest -s tests/chaos $(PYTEST_ARGS)

demo: $(STAMP) tools
	$(BIN)/python hack/demo.py

dev: $(STAMP) tools
	$(BIN)/kurable dev

# Figures, never pass/fail: workflow steps, entity commands, recovery after a restart.
bench: $(STAMP) tools
	$(BIN)/python bench/chain.py
	$(BIN)/python bench/entities.py
	$(BIN)/python bench/recovery.py

clean:
	rm -rf $(VENV) .kurable .pytest_cache .mypy_cache .ruff_cache
