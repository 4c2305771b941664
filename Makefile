# Run `make help` for the targets.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-test

.DEFAULT_GOAL := help
.PHONY: help install report study app test docs bench clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch==2.13.* resolves to the local CPU wheel where one is on disk (/opt/wheels), not a multi-GB CUDA build
WHEELS := $(wildcard /opt/wheels)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet $(if $(WHEELS),--find-links $(WHEELS)) -e '.[test]'
	touch $@

install: $(STAMP) ## Create .venv (if missing) and install lab with its notebook and test extras

report: $(STAMP) ## Run each report notebook for each of its params files into reports/ (.ipynb + .html)
	$(PY) -m lab report notebooks/01-policy-comparison.ipynb params/01-policy-comparison/*.yaml --out reports
	$(PY) -m lab report notebooks/03-real-models.ipynb params/03-real-models/*.yaml --out reports
	$(PY) -m lab report notebooks/07-learned-eviction.ipynb params/07-learned-eviction/*.yaml --out reports

study: $(STAMP) ## Run the default study (params/studies/default.yaml) on a LocalCluster into results/default, then its report
	$(PY) -m lab study params/studies/default.yaml --out results/default
	$(PY) -m lab report notebooks/08-study.ipynb params/08-study/default.yaml --out reports

app: $(STAMP) ## Serve the explorer as a web page with Voila on http://127.0.0.1:8866/
	$(PY) -m lab app

# Python's bytecode caches are written (into __pycache__, gitignored, where numba keeps its compiled kernels too):
# the suite starts about 70 Python processes, and without them each compiled lab's modules again and each pytest
# worker re-rewrote every test module (docs/benchmark-log.md, 2026-12-07)
unexport PYTHONDONTWRITEBYTECODE

# three processes on this project's 2-core machine: many tests wait on another process (a notebook kernel, a Voila
# server and its browser, a Dask cluster), and a third worker runs meanwhile (docs/benchmark-log.md, 2026-12-07)
TEST_WORKERS ?= 3
test: $(STAMP) ## Run the whole test suite on TEST_WORKERS processes (default 3; pytest-xdist)
	$(PY) -m pytest -n $(TEST_WORKERS)

docs: $(STAMP) ## Build the documentation site into site/ (MkDocs, strict: a warning fails it); open site/index.html
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

bench: $(STAMP) ## Run the benchmarks: the first answer cold and warm, simulator vs libCacheSim, bounds and curves, pipeline cycle, captures, explorer updates, studies on 1, 2 and all cores
	$(PY) benchmarks/bench_cold_start.py
	$(PY) benchmarks/bench_simulator.py
	$(PY) benchmarks/bench_bounds.py
	$(PY) benchmarks/bench_pipeline.py
	$(PY) benchmarks/bench_capture.py
	$(PY) benchmarks/bench_explorer.py
	$(PY) benchmarks/bench_study.py

clean: ## Remove .venv and caches
	rm -rf $(VENV) .pytest_cache .hypothesis reports results site
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
