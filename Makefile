# Two commands do everything on a fresh machine (Python 3.11, no GPU):
#   make demo   installs .venv and runs the whole pipeline on the embedded synthetic data
#   make test   installs .venv and runs the test suite
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
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

install: $(STAMP)

demo: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/snakemake --cores $(CORES) --configfile config/smoke.yaml --rerun-incomplete
	@cat results/smoke/tables/summary.txt

test: $(STAMP)
	bash .ci/system-deps.sh --best-effort
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pytest $(PYTEST_ARGS)

clean-demo:
	rm -rf results/smoke data/prepared-smoke .snakemake
