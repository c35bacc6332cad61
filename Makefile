# One command to set up and build the book, one to set up and pass the tests.
# Everything is installed into .venv inside the checkout, from pyproject.toml; MathJax comes from npm.
#
#   make book    set up, execute every chapter and build the HTML book in _build/html
#   make test    set up, lint, unit tests (with the notebook sync test), nbval on every chapter,
#                the strict book build, and the checks on the built HTML (links, headless Chromium)
#
# RESNET_TUTORIAL_PROFILE=gpu make book    executes the chapters in the quick GPU profile (paper: the papers' recipes).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
NPM    ?= npm

# Models trained by a chapter are cached here (read by resnet_tutorial.experiments.cached_fit), so the book
# build reuses what nbval trained a few minutes earlier instead of training it again.
RESNET_TUTORIAL_CACHE ?= $(CURDIR)/_build/.experiments
export RESNET_TUTORIAL_CACHE
export PYDEVD_DISABLE_FILE_VALIDATION := 1

MATHJAX      := book/_mathjax/mathjax/tex-mml-chtml.js
CHAPTERS_MD  := $(sort $(wildcard chapters/[0-9][0-9]_*.md))
CHAPTERS_NB  := $(CHAPTERS_MD:.md=.ipynb)
BOOK_FLAGS   := --warningiserror --nitpick --keep-going
# nbval runs two notebooks at a time (one per core), each kernel on one thread.
NBVAL_WORKERS ?= 2
NBVAL_THREADS ?= 1
NBVAL_CELL_TIMEOUT ?= 3600

.PHONY: help setup mathjax test unit lint notebooks check-notebooks nbval book html-check browser clean

help:
	@echo "make book             set up .venv and build the book (HTML in _build/html)"
	@echo "make test             set up .venv and run every check CI runs"
	@echo "make notebooks        regenerate chapters/*.ipynb (for Colab) from chapters/*.md"
	@echo "make nbval            execute every chapter notebook with nbval"
	@echo "make html-check       link check and headless-browser test of the built book"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e '.[test,book]'
	touch $(STAMP)

# MathJax 3 from npm, served by the book itself so that math renders offline. Not under a _static/ folder:
# Jupyter Book would add every script there to every page.
$(MATHJAX): package.json package-lock.json
	$(NPM) ci --no-audit --no-fund --loglevel=error
	rm -rf book/_mathjax
	mkdir -p book/_mathjax
	cp -R node_modules/mathjax/es5 book/_mathjax/mathjax
	touch $(MATHJAX)

mathjax: $(MATHJAX)

setup: $(STAMP) $(MATHJAX)

lint: setup
	$(BIN)/ruff check resnet_tutorial tests scripts

unit: setup
	$(BIN)/python -m pytest tests -q --ignore=tests/test_book_html.py

notebooks: setup
	$(BIN)/python scripts/sync_notebooks.py

check-notebooks: setup
	$(BIN)/python scripts/sync_notebooks.py --check

nbval: setup check-notebooks
	OMP_NUM_THREADS=$(NBVAL_THREADS) MKL_NUM_THREADS=$(NBVAL_THREADS) \
	$(BIN)/python -m pytest --nbval-lax $(CHAPTERS_NB) -n $(NBVAL_WORKERS) --dist loadfile \
	  --nbval-cell-timeout=$(NBVAL_CELL_TIMEOUT) -q

book: setup
	$(BIN)/jupyter-book build . $(BOOK_FLAGS)
	@echo "Open $(CURDIR)/_build/html/index.html"

# Headless Chromium for the browser test (Debian package; CI runs as root on Debian).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  command -v google-chrome >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q --no-install-recommends chromium; \
	    else echo "error: the browser test needs Chromium: sudo apt-get install chromium"; exit 2; fi; }

html-check: setup browser
	RESNET_TUTORIAL_REQUIRE_BOOK=1 $(BIN)/python -m pytest tests/test_book_html.py -q

test: lint unit nbval book html-check

clean:
	rm -rf _build .pytest_cache .ruff_cache book/_mathjax
