# jetlib: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo
DEMO_JETS ?= 3000
KFP_ENDPOINT ?= http://localhost:8080
KFP_EXPERIMENT ?= jetlib
RUN ?=
# make test and test-fast: two pytest-xdist workers, each taking whole test files (a file's fixtures are built
# once) with the files holding slow tests first (tests/conftest.py); PYTEST_WORKERS= runs in one process.
PYTEST_WORKERS ?= -n 2 --dist loadfile --no-loadscope-reorder
PIPELINE ?= pipelines/jet_ssl.yaml

.DEFAULT_GOAL := help
.PHONY: help install test test-fast lint bench bench-gpu study study-methods demo compile compile-pinned submit clean docs docs-build

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv with jetlib and every dependency (torch, kfp, pythia8mc, ...)

test: $(STAMP) ## run the whole test suite (tiny generated data, Docker included: 1,252 tests, 8 min 3 s on two workers on an idle 2-core machine, 2026-12-06)
	$(BIN)/pytest $(PYTEST_WORKERS)

test-fast: $(STAMP) ## run the tests not marked slow (1,157 tests, 1 min 35 s on two workers on an idle 2-core machine, 2026-12-06)
	$(BIN)/pytest $(PYTEST_WORKERS) -m "not slow"

lint: $(STAMP) ## ruff over the package, tests and benchmarks
	$(BIN)/ruff check jetlib tests benchmarks

bench: $(STAMP) ## run the data and pretraining benchmarks; each prints one JSON line
	$(BIN)/python benchmarks/data.py
	$(BIN)/python benchmarks/pretrain.py

bench-gpu: ## on one GPU, no venv needed: benchmarks/gpu_run.sh (make its dataset first, see that file); OUT=dir keeps the JSON lines
	bash benchmarks/gpu_run.sh

study: $(STAMP) ## 2 pretraining seeds x every mode at 1% and 10% labels x 2 seeds, 4,000 simulated jets (hours on 2 cores)
	$(BIN)/python benchmarks/study.py

STUDY_METHODS ?= --n-jets 4000 --preset cpu --pretrain-epochs 3 --fractions 0.01,0.1 --seeds 0,1 --pretrain-seeds 0,1 --tune-trials 2 --tune-epochs 3 --work .cache/study-methods-recipes
STUDY_ALL = --methods simclr,vicreg,barlowtwins,byol --modes finetune,scratch,vgg
study-methods: $(STAMP) ## SimCLR, VICReg, Barlow Twins and BYOL, each its own recipe tuned (2 trials x 3 epochs per method and pretraining seed), vs scratch and VGG (4,000 jets, cpu preset, 3 pretraining epochs, 2 x 2 seeds): two processes, searches split by method, then runs by seed (73 min on the 2-core machine shared with other jobs, measured 2026-12-06: docs/studies.md)
	$(BIN)/python benchmarks/study.py $(STUDY_METHODS) --prepare
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/study.py $(STUDY_METHODS) --methods simclr,vicreg --pretrain-only & \
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/study.py $(STUDY_METHODS) --methods barlowtwins,byol --pretrain-only; \
	b=$$?; wait $$!; a=$$?; [ $$a -eq 0 ] && [ $$b -eq 0 ]
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/study.py $(STUDY_METHODS) $(STUDY_ALL) --seeds 0 & \
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/study.py $(STUDY_METHODS) $(STUDY_ALL) --seeds 1; \
	b=$$?; wait $$!; a=$$?; [ $$a -eq 0 ] && [ $$b -eq 0 ]
	$(BIN)/python benchmarks/study.py $(STUDY_METHODS) $(STUDY_ALL) --from-results

demo: $(STAMP) ## run the compiled pipeline under kfp.local: simulate 3,000 jets (kept in JETLIB_CACHE by their settings), pretrain, fine-tune vs scratch x 3 seeds, report, export, then each step's time (4 min 29 s on an idle 2-core machine, empty cache, measured 2026-12-06 by benchmarks/demo.py)
	$(BIN)/python -m pipelines.demo --out $(DEMO_DIR) --n-jets $(DEMO_JETS)

compile: $(STAMP) ## compile pipelines/jet_ssl.yaml (GPU) and jet_ssl_cpu.yaml (images from JETLIB_IMAGE, JETLIB_CUDA_IMAGE)
	$(BIN)/python -m pipelines.jet_ssl

compile-pinned: $(STAMP) ## compile both pipelines against the built images' digests into build/pipelines/ (PIN_LOCAL=1: content tags, for kind)
	$(BIN)/python -m pipelines.pin --out build/pipelines --flavors "$(FLAVORS)" $(if $(PIN_LOCAL),--local)

# The run's display name: RUN, else one per submission (the run folder is the run's id either way).
submit: $(STAMP) ## submit PIPELINE to KFP_ENDPOINT in KFP_EXPERIMENT (display name RUN, default unique); ARGS="key=value ..." (docs/workflow.md)
	$(BIN)/kfp --endpoint $(KFP_ENDPOINT) run create -e $(KFP_EXPERIMENT) \
	  -r "$(or $(RUN),$(basename $(notdir $(PIPELINE)))-$$(date -u +%Y%m%d-%H%M%S-%3N))" -f $(PIPELINE) $(ARGS)

DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP) ## serve the documentation site (mkdocs.yml, docs/) on http://127.0.0.1:8000, rebuilt on every save
	$(BIN)/mkdocs serve

docs-build: $(DOCS_STAMP) ## build the documentation site into build/site with --strict (a broken link or missing page fails), as CI does
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

clean: ## remove the demo output and caches (keeps .venv)
	rm -rf $(DEMO_DIR) .cache .pytest_cache .ruff_cache

# --- containers and clusters: images/, manifests/, scripts/ (docs/clusters.md) ---
FLAVORS ?= cpu cuda
BASE_IMAGE ?=
CUDA_BASE_IMAGE ?=
KIND_CLUSTER ?= jetlib
.PHONY: image-base images kind-up kind-e2e kind-down

image-base: ## build jetlib-base:bookworm from Debian packages (debootstrap), for hosts that reach no image registry
	images/build-base.sh jetlib-base:bookworm

images: ## build jetlib:<version> and jetlib-cuda:<version> (FLAVORS=cpu for one; BASE_IMAGE=jetlib-base:bookworm offline)
	@set -e; for f in $(FLAVORS); do \
	  if [ $$f = cuda ]; then BASE_IMAGE="$(CUDA_BASE_IMAGE)" images/build.sh cuda; \
	  else BASE_IMAGE="$(BASE_IMAGE)" images/build.sh $$f; fi; done

kind-up: ## kind cluster + KFP 2.17.0 (its SeaweedFS: the one store) + Trainer v2.3.0 + jetlib runtime + RBAC, image loaded into the workers (needs docker, kind v0.32.0, kubectl)
	KIND_CLUSTER=$(KIND_CLUSTER) scripts/kind-up.sh

kind-e2e: $(STAMP) ## compile the CPU pipeline, run it (tiny preset) on the kind cluster, fail on failure, print summary metrics
	JETLIB_IMAGE=jetlib:$$(sed -nE 's/^__version__ = "([^"]+)"/\1/p' jetlib/__init__.py) $(BIN)/python -m pipelines.jet_ssl
	KIND_CLUSTER=$(KIND_CLUSTER) $(BIN)/python scripts/kind_e2e.py

kind-down: ## delete the kind cluster
	kind delete cluster --name $(KIND_CLUSTER)
