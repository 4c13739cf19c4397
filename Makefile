# tritonfleet — the two set-up commands are `make demo` and `make test`.
# Every target installs what it needs: the Python virtualenv (.venv), the
# Kubernetes testbed binaries, tritonserver and the image's base and wheels (all
# cached under $(TRITONFLEET_CACHE), outside the checkout, and reused when present).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export TRITONFLEET_CACHE ?= $(HOME)/.cache/tritonfleet
# uv keeps its wheel cache outside the checkout too, so a clean clone installs fast.
export UV_CACHE_DIR ?= $(TRITONFLEET_CACHE)/uv
PYTEST_FLAGS ?=

STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: help
help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@echo "[venv] installing tritonfleet and its dev dependencies into $(VENV)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	@# --exact: a dependency the project dropped leaves the venv too (kopf would import a
	@# stale `kubernetes` client just because it is installed).
	@$(BIN)/uv pip install --quiet --exact --python $(BIN)/python -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

.PHONY: venv
venv: $(STAMP) ## create .venv with the package and dev tools

.PHONY: lint
lint: venv ## ruff, mypy --strict, import-linter layers, CRD drift check, policy scan
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/mypy
	$(BIN)/mypy bench  # the benchmarks too: strict, like the package
	$(BIN)/lint-imports
	$(BIN)/tritonfleet crds --check
	hack/scan/scan.sh

.PHONY: scan
scan: venv ## checkov on the chart and on the objects the operator creates for the samples
	hack/scan/scan.sh

.PHONY: crds
crds: venv ## regenerate crds/ and the chart's copy from the pydantic models
	$(BIN)/tritonfleet crds

.PHONY: unit
unit: venv ## unit tests (pure layers, fast)
	$(BIN)/python -m pytest tests/unit $(PYTEST_FLAGS)

# The fixtures build or start each real component on first use (tests/support/fixtures.py),
# so a tier builds only what its selected tests need: e.g.
#   make integration PYTEST_FLAGS='-m "not testbed"'   # real Triton and S3, no cluster
.PHONY: integration
integration: venv ## integration tests: real API server testbed, real tritonserver, moto S3
	$(BIN)/python -m pytest tests/integration $(PYTEST_FLAGS)

.PHONY: e2e
e2e: venv ## end to end: helm install, the image's containers and real Triton pods via the pod runner
	$(BIN)/python -m pytest tests/e2e -m "not long" $(PYTEST_FLAGS)

.PHONY: e2e-long
e2e-long: venv ## the long end-to-end variants (a 3-step canary promoted, an ensemble's member updated, a canary steered by annotation)
	$(BIN)/python -m pytest tests/e2e -m long $(PYTEST_FLAGS)

N ?= 3
TIER ?= integration
.PHONY: test-repeat
test-repeat: venv ## run one tier N times and list every test that failed in any run (N=3 TIER=integration)
	$(BIN)/python hack/test_repeat.py --runs $(N) tests/$(TIER) -- $(PYTEST_FLAGS)

# The chaos suite (tests/chaos) injects faults for minutes at a time: its own target,
# not part of `make test` (CI's time budget).
.PHONY: test
test: lint ## every check and every test (builds the testbed, Triton and the image on first run)
	$(MAKE) --no-print-directory testbed-build triton image
	$(BIN)/python -m pytest tests --ignore=tests/chaos -m "not long" $(PYTEST_FLAGS)

SOAK_MINUTES ?= 30
.PHONY: soak
soak: venv testbed-build triton ## steady load, model churn and Triton kills for SOAK_MINUTES (30): RSS, fds, writes/min, failed requests
	$(BIN)/python -m hack.soak --minutes $(SOAK_MINUTES)

.PHONY: chaos
chaos: venv testbed-build triton image ## faults under load: hung Triton and hosted API, operator kills, API server and etcd restarts, leader failover (also of the chart's two replicas)
	$(BIN)/python -m pytest tests/chaos -s -p no:cacheprovider $(PYTEST_FLAGS)

.PHONY: testbed-build
testbed-build: ## build/cache kube-apiserver, controller-manager, scheduler, kubectl, etcd, kwok, helm
	hack/testbed/build.sh

.PHONY: testbed-up
testbed-up: ## start the local cluster (4 GPU + 2 CPU fake nodes); kubeconfig in .testbed/kubeconfig
	hack/testbed/up.sh

.PHONY: testbed-down
testbed-down: ## stop the local cluster, leaving no process behind
	hack/testbed/down.sh

.PHONY: triton
triton: ## install the real tritonserver (CPU, python backend) into the cache
	hack/triton/install.sh

# The image users deploy, built here from the Dockerfile with podman (installed from
# Debian if missing), from a Debian base made once and a wheelhouse made on the host:
# no registry and no network in the build. The pod runner runs the project's pods from it.
.PHONY: image
image: venv ## build the tritonfleet image from the Dockerfile (podman), check it starts and holds nothing extra
	$(BIN)/python -m hack.devtools.image

.PHONY: demo
demo: venv testbed-build triton image ## the testbed, the chart helm-installed, the samples served, a Triton kill
	hack/demo.sh

.PHONY: demo-down
demo-down: ## stop what make demo left running
	hack/demo-down.sh

.PHONY: prometheus
prometheus: ## build/cache the real Prometheus server (for bench/bench_autoscaling.py)
	hack/prometheus/install.sh >/dev/null

.PHONY: bench-autoscaling
bench-autoscaling: venv testbed-build triton prometheus ## queue-time spike -> HPA: ours vs Prometheus (own testbed, tfbench)
	$(BIN)/python bench/bench_autoscaling.py

.PHONY: bench-operator
bench-operator: venv testbed-build ## the operator at fleet scale against a bare client (BENCH_MODELS=250,1000,5000)
	$(BIN)/python bench/bench_operator.py

.PHONY: bench
bench: venv testbed-build triton prometheus ## benchmarks (figures printed, not timed tests)
	@ls bench/*.py >/dev/null 2>&1 || { echo "no benchmarks yet"; exit 0; }
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b; done

.PHONY: clean
clean: ## remove the virtualenv and local state (keeps the binary cache)
	-hack/testbed/down.sh
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .testbed
