# Two commands do everything on a fresh machine (Python 3.11, no GPU):
#   make demo   installs .venv and runs the whole pipeline on the embedded synthetic data
#   make test   installs .venv and runs the test suite
SHELL  := /bin/bash
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CORES  ?= 2
# the test suite on every core (pytest-xdist, a test module per worker at a time, one torch thread each:
# tests/conftest.py says why); XDIST= runs it in one process
XDIST  ?= -n $(shell nproc) --dist loadfile --no-loadscope-reorder
# then the tests of a search's numbers under chunking and resume (marker `chunking`) once more with this many torch
# threads: another thread count is another reduction order (issue 30); CHUNKING_THREADS= skips that run
CHUNKING_THREADS ?= 2
# Python writes the .pyc of what it imports, whatever the caller's shell says: under PYTHONDONTWRITEBYTECODE=1 (set on
# some machines and CI images) every stage job would compile torch's sources again, about 6 s of CPU per job, which
# doubled the demo and the suite there (docs/scaling.md)
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install demo test test-quick gpu-check wheelhouse clean-demo help

help:
	@echo "make demo   - install and run the smoke pipeline -> results/smoke/tables/table{1,2}.tex"
	@echo "make test   - install and run the test suite (what CI runs: SLURM, DVC, TeX included)"
	@echo "make test-quick - unit, independent-reference and fidelity tests only (no Snakemake/DVC/SLURM runs)"
	@echo "make gpu-check - the CUDA path in one command (a CUDA torch first: README); GPU_CHECK=\"--device cpu --size tiny\" on a CPU"
	@echo "                 PY=/path/to/python3: with that interpreter's own torch, installing nothing; WHEELS=dir: a wheelhouse"
	@echo "make wheelhouse PYVER=3.12 [HAVE=freeze.txt] - the wheels gpu-check needs besides torch, for an offline machine"

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile -r requirements.txt   # .pyc of what is imported, on first import: a minute less
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	$(PY) -c "import metantk_nas.search.scoring, metantk_nas.fsl.evaluate, metantk_nas.report.tables"   # their .pyc
	touch $@

install: $(STAMP)

demo: $(STAMP)
	@echo "make demo: the whole DAG on the embedded synthetic data (config/smoke.yaml), one line per finished job"
	@set -o pipefail; PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/snakemake --cores $(CORES) \
	  --configfile config/smoke.yaml --rerun-incomplete --scheduler greedy --quiet rules host reason 2>&1 | $(PY) -m metantk_nas.progress
	@DVC=$(VENV)/bin/dvc scripts/dvc_record   # DVC records what Snakemake made: `dvc status` is clean
	@cat results/smoke/tables/summary.txt
	@echo "Next:"
	@echo "  $(VENV)/bin/snakemake --configfile config/smoke.yaml --report results/smoke/report.html   # HTML report: tables, cells, curves"
	@echo "  $(VENV)/bin/python scripts/audit.py results/smoke/tables/table1.tex                        # provenance of every number"
	@echo "  $(VENV)/bin/dvc status && $(VENV)/bin/dvc metrics show                                    # the same results through DVC (README)"

test: $(STAMP)
	bash .ci/system-deps.sh --best-effort
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH TEST_THREADS=1 $(PY) -m pytest $(XDIST) $(PYTEST_ARGS)
	$(if $(CHUNKING_THREADS),TEST_THREADS=$(CHUNKING_THREADS) $(PY) -m pytest -m chunking -p no:cacheprovider tests/test_search.py tests/test_batched.py)

# the quick tier: every test not marked `integration` (docs/testing.md), no system packages needed
test-quick: $(STAMP)
	TEST_THREADS=1 $(PY) -m pytest $(XDIST) -m "not integration and not sweep" $(PYTEST_ARGS)

# the CUDA path in one command: the tiny DAG on the GPU, the stage scripts at paper size, the benchmarks
# (bench/gpu_check.py); GPU_CHECK="--device cpu --size tiny" runs the same on a CPU, as CI does.
# PY=/path/to/python3: an interpreter of your own (a CUDA torch), no .venv, nothing installed; WHEELS=dir: what it
# lacks, from a wheelhouse (make wheelhouse), installed with --no-index into .gpu-check-env/ over its packages
GPU_CHECK ?= --device cuda --size paper
ifeq ($(origin PY),command line)
GPU_CHECK_DEPS :=
else
GPU_CHECK_DEPS := $(STAMP)
endif
gpu-check: $(GPU_CHECK_DEPS)
	$(PY) bench/gpu_check.py $(if $(WHEELS),--wheels $(WHEELS)) $(GPU_CHECK)

# the wheels `make gpu-check WHEELS=...` needs besides torch, for a GPU machine with no package index: run it where
# there is one. PYVER: that machine's Python; HAVE: its `pip list --format=freeze`, to fetch only what it lacks
PYVER      ?= $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
WHEELHOUSE ?= wheelhouse
wheelhouse:
	$(PYTHON) bench/wheelhouse.py --python-version $(PYVER) --out $(WHEELHOUSE) $(if $(HAVE),--have $(HAVE))

clean-demo:
	rm -rf results/smoke data/prepared-smoke .snakemake
