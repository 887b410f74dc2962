# cells-operator developer entry points. Everything installs itself: a fresh clone needs only
# Python >= 3.11, make and (for the control plane) root or sudo for Debian packages.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CLUSTER_DIR ?= .cluster
KIND_CLUSTER ?= cells
IMAGE ?= cells-operator:dev
PYTEST_ARGS ?=
# Kubernetes release of the local control plane (cluster, demo, tests): empty means the default in
# devtools/cells_devtools/devcluster/assets.py; K8S_VERSION=1.20.2 selects the oldest tested one (ADR 0012).
K8S_VERSION ?=
export K8S_VERSION
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help venv node recheck assets cluster cluster-down test unit integration e2e soak soak-churn demo demo-down lint fmt crds bench e2e-kind clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

# The four local distributions (ADR 0016), editable, in one environment: pip takes the local formats/,
# dataplane/ and devtools/ for the operator's dependencies on them (they are not on any index).
DISTRIBUTIONS := formats/pyproject.toml dataplane/pyproject.toml devtools/pyproject.toml pyproject.toml
$(VENV)/.installed: $(DISTRIBUTIONS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ./formats -e ./dataplane -e ./devtools -e '.[test]'
	touch $@

venv: $(VENV)/.installed ## create .venv with the operator, formats, data plane, dev tools and test dependencies

assets: venv ## find or build the control-plane binaries (etcd, kube-apiserver; once per machine)
	$(VENV)/bin/cells-dev cluster build

cluster: assets ## start the local control plane and write .cluster/kubeconfig
	@$(VENV)/bin/cells-dev cluster up --dir $(CLUSTER_DIR)
	@echo "run: export KUBECONFIG=$(abspath $(CLUSTER_DIR))/kubeconfig"

cluster-down: ## stop the local control plane
	@if [ -x $(VENV)/bin/cells-dev ]; then $(VENV)/bin/cells-dev cluster down --dir $(CLUSTER_DIR); fi

lint: venv ## ruff, mypy (strict on the core and the wire formats), import-linter's contracts (ADR 0016)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

fmt: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

crds: venv ## regenerate crds/*.yaml from the pydantic models (ADR 0017; tests/unit/test_crds.py fails on drift)
	$(VENV)/bin/cells-operator manifests crds --out-dir crds

unit: venv node recheck ## unit tests (no cluster)
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

integration: assets ## integration tests on a fresh local control plane
	$(VENV)/bin/pytest tests/integration $(PYTEST_ARGS)

e2e: assets ## e2e tests (against CELLS_TEST_KUBECONFIG, else a fresh local control plane)
	$(VENV)/bin/pytest tests/e2e $(PYTEST_ARGS)

node: ## Node.js for the ECMAScript differential test (Debian's nodejs if none is on PATH)
	@command -v node >/dev/null 2>&1 || command -v nodejs >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends nodejs; }

recheck: node tools/recheck/node_modules/.installed ## the ReDoS checker the operator refuses catastrophic patterns with (ADR 0013)

tools/recheck/node_modules/.installed: tools/recheck/package.json tools/recheck/package-lock.json
	@command -v npm >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends npm; }
	cd tools/recheck && npm ci --no-audit --no-fund --omit=optional --loglevel=error
	touch $@

test: assets node recheck lint ## every test tier that can run here: unit, integration, e2e
	$(VENV)/bin/pytest tests $(PYTEST_ARGS)

SOAK_RUNS ?= 20
soak: assets ## the fault tests SOAK_RUNS times (default 20), each on a fresh control plane; prints passes and failures
	$(PY) -m tests.soak --runs $(SOAK_RUNS)

soak-churn: assets ## 10 minutes of churn and API server restarts; operator RSS and fds sampled -> docs/benchmarks.md
	$(PY) -m tests.bench.churn

$(VENV)/.bench-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

bench: assets $(VENV)/.bench-installed ## benchmarks: data plane (router vs nginx vs direct, Topology Service; nginx extracted from Debian once), leader failover, operator scale -> docs/benchmarks.md
	$(PY) -m tests.bench.dataplane
	$(PY) -m tests.bench.failover
	$(PY) -m tests.bench.scale
	$(PY) -m tests.bench.operator

demo: cluster ## control plane + CRDs + operator + samples, then show what happened
	$(VENV)/bin/cells-dev demo --cluster-dir $(CLUSTER_DIR)

demo-down: ## stop the demo operator and the control plane
	-$(VENV)/bin/cells-dev demo --cluster-dir $(CLUSTER_DIR) --stop
	$(MAKE) cluster-down

# --- kind (needs Docker; cannot run on machines without a Docker engine) ---------------------
e2e-kind: ## kind cluster, image built and loaded, deploy/, then tests/e2e against it
	kind create cluster --name $(KIND_CLUSTER) --config tests/e2e/kind/cluster.yaml || true
	docker build --target operator -t $(IMAGE) .
	kind load docker-image $(IMAGE) --name $(KIND_CLUSTER)
	kubectl --context kind-$(KIND_CLUSTER) apply --server-side -f crds/
	kubectl --context kind-$(KIND_CLUSTER) apply -k deploy/overlays/dev
	kubectl --context kind-$(KIND_CLUSTER) -n cells-system rollout status deploy/cells-operator --timeout=180s
	kind get kubeconfig --name $(KIND_CLUSTER) > .kind-kubeconfig
	CELLS_TEST_KUBECONFIG=$(abspath .kind-kubeconfig) CELLS_E2E_OPERATOR=in-cluster \
		$(VENV)/bin/pytest tests/e2e $(PYTEST_ARGS)

clean: cluster-down
	rm -rf $(VENV) $(CLUSTER_DIR) .pytest_cache .ruff_cache
