# Kurable's developer entry points. `make demo` and `make test` do all the set-up
# on a fresh machine: a virtual environment in .venv and the control-plane
# binaries built from source (cached in ~/.cache/kurable/tools by version), each
# target only the binaries it needs: the demo and `make dev` no helm.

# The newest Python >= 3.11 that actually runs (pyenv shims may exist but fail).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	  $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { command -v $$p; break; }; done)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: all venv tools control-plane-tools crds lint test test-fast test-integration chaos demo dev bench bench-peers clean

all: test

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Kurable needs Python 3.11 or newer on PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP)

# All the binaries: kube-apiserver, etcd and kubectl (the local control plane) and helm
# (the chart tests).
tools:
	@hack/tools.sh

# The local control plane only (`make demo`, `make dev`).
control-plane-tools:
	@hack/tools.sh kube-apiserver etcd kubectl

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
	MYPYPATH=operator:bench $(BIN)/mypy bench/kube.py bench/peers.py bench/scale.py bench/hotspots.py bench/etcd_security.py
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

chaos: $(STAMP) control-plane-tools
	KURABLE_CHAOS_SCALE=$(CHAOS_SCALE) KURABLE_CHAOS_SEED=$(CHAOS_SEED) \
	  $(BIN)/pytest -s tests/chaos $(PYTEST_ARGS)

demo: $(STAMP) control-plane-tools
	$(BIN)/python hack/demo.py

dev: $(STAMP) control-plane-tools
	$(BIN)/kurable dev

# Figures, never pass/fail: workflow steps, entity commands, recovery after a restart,
# N runs waiting on a signal (SCALE_RUNS=1000,3000,10000 for the full set).
SCALE_RUNS ?= 1000

bench: $(STAMP) control-plane-tools
	$(BIN)/python bench/chain.py
	$(BIN)/python bench/entities.py
	$(BIN)/python bench/recovery.py
	$(BIN)/python bench/scale.py --runs $(SCALE_RUNS)

# Kurable beside Restate (installed by hack/restate.sh into ~/.cache/kurable/restate)
# and beside the etcd and API-server floors, on one workload.
bench-peers: $(STAMP) tools
	$(BIN)/python bench/peers.py

clean:
	rm -rf $(VENV) .kurable .pytest_cache .mypy_cache .ruff_cache
