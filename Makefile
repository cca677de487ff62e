# deepnomo: the two commands are `make reproduce` and `make test`.
# Every target runs `setup` first; a second setup does nothing slow (stamps are
# keyed on the content of the dependency lists and the package sources).

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip --disable-pip-version-check -q
RLIB    := $(CURDIR)/.Rlib
STAMPS  := .stamps
SHARED  ?= $(abspath $(CURDIR)/../shared)
RSCRIPT := R_LIBS=$(RLIB) R_LIBS_USER=$(RLIB) Rscript --no-init-file

export DEEPNOMO_SHARED := $(SHARED)
export DEEPNOMO_ROOT := $(CURDIR)
export R_LIBS := $(RLIB)
export R_LIBS_USER := $(RLIB)
export OMP_NUM_THREADS ?= 2

hash = $(shell cat $(1) | sha1sum | cut -c1-12)
APT_STAMP := $(STAMPS)/apt-$(call hash,apt-packages.txt)
PY_STAMP  := $(STAMPS)/py-$(call hash,requirements.txt constraints.txt pyproject.toml)
R_SOURCES := DESCRIPTION NAMESPACE $(wildcard R/*.R) $(wildcard src/*.cpp src/*.h src/Makevars) \
             $(shell find inst -type f -not -path 'inst/schema/*' 2>/dev/null) bridge/cohort_schema.json
R_STAMP   := $(STAMPS)/rpkg

.PHONY: help setup test test-python test-r check lint document reproduce bench clean

help:
	@echo "make setup      install R + Debian r-cran-* packages, .venv, and the R package into .Rlib"
	@echo "make test       every Python (pytest) and R (testthat) test"
	@echo "make reproduce  re-run the study designs end to end and write results/"
	@echo "make check      R CMD check of the R package"
	@echo "make lint       ruff (Python) and lintr (R)"
	@echo "make bench      benchmarks (print tables)"

setup: $(APT_STAMP) $(PY_STAMP) $(R_STAMP)

$(APT_STAMP): apt-packages.txt
	@mkdir -p $(STAMPS)
	@if dpkg -s $$(cat apt-packages.txt) >/dev/null 2>&1; then \
	  echo "[setup] Debian packages present"; \
	else \
	  echo "[setup] installing Debian packages (R and r-cran-*)"; \
	  apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $$(cat apt-packages.txt) >/dev/null; \
	fi
	@rm -f $(STAMPS)/apt-*; touch $@

$(PY_STAMP): requirements.txt constraints.txt pyproject.toml
	@mkdir -p $(STAMPS)
	@echo "[setup] Python environment in $(VENV)"
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PIP) install --upgrade pip setuptools wheel
	@# torch first, CPU wheel, then held in place by constraints.txt
	@$(PIP) install -c constraints.txt torch==2.13.0
	@# pyradiomics 3.0.1 must be built against the venv's numpy, without isolation
	@$(PIP) install -c constraints.txt $$(grep -E '^numpy==' requirements.txt) versioneer==0.29 wheel
	@$(PIP) install -c constraints.txt --no-build-isolation pyradiomics==3.0.1
	@$(PIP) install -c constraints.txt -r requirements.txt
	@$(PIP) install -c constraints.txt --no-deps --no-build-isolation -e .
	@$(PY) -c "import torch, radiomics, rpy2; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	@rm -f $(STAMPS)/py-*; touch $@

inst/schema/cohort_schema.json: bridge/cohort_schema.json
	@mkdir -p inst/schema
	cp $< $@

$(R_STAMP): $(APT_STAMP) $(R_SOURCES) inst/schema/cohort_schema.json
	@mkdir -p $(RLIB) $(STAMPS)
	@echo "[setup] installing the R package into .Rlib"
	@R_LIBS=$(RLIB) R CMD INSTALL --no-multiarch --no-test-load --preclean -l $(RLIB) . >$(STAMPS)/rinstall.log 2>&1 \
	  || { cat $(STAMPS)/rinstall.log; exit 1; }
	@$(RSCRIPT) -e 'suppressPackageStartupMessages(library(deepnomo))'
	@touch $@

document: $(R_STAMP)
	$(RSCRIPT) -e 'roxygen2::roxygenise(roclets = c("rd", "namespace"))'

test: setup test-python test-r

test-python:
	$(PY) -m pytest -q tests/python

test-r:
	$(RSCRIPT) tests/run_testthat.R

check: setup
	@rm -rf build && mkdir -p build
	cd build && R_LIBS=$(RLIB) R CMD build --no-manual .. >/dev/null
	cd build && _R_CHECK_FORCE_SUGGESTS_=false R_LIBS=$(RLIB) R CMD check --no-manual deepnomo_*.tar.gz

lint: setup
	$(VENV)/bin/ruff check python tests/python bench
	$(RSCRIPT) -e 'l <- lintr::lint_dir("R"); print(l); quit(status = length(l) > 0)'

reproduce: setup
	$(PY) -m deepnomo reproduce --study all --preset quick --out results

bench: setup
	@for f in bench/*.py; do echo "== $$f"; $(PY) $$f; done
	@for f in bench/*.R; do echo "== $$f"; $(RSCRIPT) $$f; done

clean:
	rm -rf build results .pytest_cache src/*.o src/*.so
