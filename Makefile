# One entry point for people and CI: `make up` runs the platform, `make test` runs every check.
# .ci/run calls `make test`; nothing here is CI-only.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: up down status test check lint typecheck pytest system-deps bench constraints schemas clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	bash scripts/system-deps.sh

## Run the platform's main job (see README); `make down` stops it.
up: $(STAMP) system-deps
	$(BIN)/nexus up

down: $(STAMP)
	$(BIN)/nexus down

status: $(STAMP)
	$(BIN)/nexus status

## Every check, in the order a reviewer reads them.
test: $(STAMP) system-deps check pytest

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

bench: $(STAMP) system-deps
	$(BIN)/python bench/run.py --with-litellm --write-readme
	$(BIN)/python bench/router.py --write-readme

## Regenerate the CRD schemas `nexus lint` ships (platform/nexus/manifests/schemas/) from
## CRD YAML: `make schemas CRDS=DIR`, DIR holding the CRD files or `kubectl get crd -o yaml`
## output. Set the *_CRDS_SOURCE labels to where those CRDs came from.
KSERVE_CRDS_SOURCE ?= kserve/kserve@aaac4e294dae2c7b1aa1886447793f3aa1c30912 (2026-08-21, after v0.20.0)
ARGOCD_CRDS_SOURCE ?= argoproj/argo-cd@37ee0097cf851bc2dd7665fc081bbce61a7e836e (2026-08-22, v3.5 line)
schemas: $(STAMP)
	@test -n "$(CRDS)" || { echo "usage: make schemas CRDS=DIR" >&2; exit 2; }
	$(BIN)/nexus schemas generate --crds "$(CRDS)" \
	  --source "serving.kserve.io=$(KSERVE_CRDS_SOURCE)" --source "argoproj.io=$(ARGOCD_CRDS_SOURCE)"

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
