# Two commands do everything on a fresh machine (Python 3.11, no GPU):
#   make demo   installs .venv and runs the whole pipeline on the embedded synthetic data
#   make test   installs .venv and runs the test suite
SHELL  := /bin/bash
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CORES  ?= 2

.PHONY: install demo test clean-demo help

help:
	@echo "make demo   - install and run the smoke pipeline -> results/smoke/tables/table{1,2}.tex"
	@echo "make test   - install and run the test suite"

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile -r requirements.txt   # .pyc on first import: a minute less
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

install: $(STAMP)

demo: $(STAMP)
	@echo "make demo: the whole DAG on the embedded synthetic data (config/smoke.yaml), one line per finished job"
	@set -o pipefail; PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/snakemake --cores $(CORES) \
	  --configfile config/smoke.yaml --rerun-incomplete --scheduler greedy --quiet rules host reason 2>&1 | $(PY) -m metantk_nas.progress
	@cat results/smoke/tables/summary.txt
	@echo "Next:"
	@echo "  $(VENV)/bin/snakemake --configfile config/smoke.yaml --report results/smoke/report.html   # HTML report: tables, cells, curves"
	@echo "  $(VENV)/bin/python scripts/audit.py results/smoke/tables/table1.tex                        # provenance of every number"
	@echo "  $(VENV)/bin/dvc repro && $(VENV)/bin/dvc metrics show                                       # the same DAG through DVC"

test: $(STAMP)
	bash .ci/system-deps.sh --best-effort
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pytest $(PYTEST_ARGS)

clean-demo:
	rm -rf results/smoke data/prepared-smoke .snakemake
