# One command to set up and build the book, one to set up and pass the tests.
# Everything is installed into .venv inside the checkout, from pyproject.toml with the exact versions of
# constraints.txt (the tested set; pyproject.toml only has lower bounds); MathJax comes from npm.
# Inside an active conda environment (CONDA_PREFIX set, e.g. from environment.yml), .venv is created with
# --system-site-packages on top of it, so the environment's torch is used and not installed a second time.
# `make VENV=/path/to/env` uses another virtual environment instead of .venv.
#
#   make book    set up, execute every chapter and build the HTML book in _build/html
#   make test    set up, lint, unit tests (with the notebook sync test), nbval on every chapter,
#                the strict builds of both editions (at once), the checks on the built HTML (links, headless
#                Chromium, the Chinese edition), the Colab simulation (every chapter's .ipynb alone, installed
#                the way its first cell does it), and the smoke run (every chapter in the gpu and paper
#                profiles on the CPU, on stand-in data; once where its code is the same in both)
#
# RESNET_TUTORIAL_PROFILE=gpu make book    executes the chapters in the quick GPU profile (paper: the papers' recipes).

PYTHON ?= $(if $(CONDA_PREFIX),$(CONDA_PREFIX)/bin/python,python3)
VENV   ?= .venv
VENV_FLAGS ?= $(if $(CONDA_PREFIX),--system-site-packages)
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
NPM    ?= npm
CONSTRAINTS := constraints.txt
PIP_INSTALL := $(BIN)/python -m pip install --quiet -c $(CONSTRAINTS)

# Models trained by a chapter are cached here (read by resnet_tutorial.experiments.cached_fit), so the book
# build reuses what nbval trained a few minutes earlier instead of training it again.
RESNET_TUTORIAL_CACHE ?= $(CURDIR)/_build/.experiments
export RESNET_TUTORIAL_CACHE
export PYDEVD_DISABLE_FILE_VALIDATION := 1

MATHJAX      := book/_mathjax/mathjax/tex-mml-chtml.js
CHAPTERS_MD  := $(sort $(wildcard chapters/[0-9][0-9]_*.md))
CHAPTERS_NB  := $(CHAPTERS_MD:.md=.ipynb)
BOOK_FLAGS   := --warningiserror --nitpick --keep-going
# The unit tests run in two processes, a test file at a time in each (320 s in one process, 251 s in two, 2026-12-07).
UNIT_WORKERS ?= 2
# nbval runs two notebooks at a time (one per core), each kernel on one thread.
NBVAL_WORKERS ?= 2
NBVAL_THREADS ?= 1
NBVAL_CELL_TIMEOUT ?= 3600
# The order the workers take the chapters in, longest first (each worker takes the next chapter when it is
# nearly done with its own). Chapter 2 (thirteen trainings, about 6 minutes) starts at once; chapter 6 starts on
# the other worker and trains the seed-0 nets that both need (chapter 2 trains its seeds from the last), while
# chapter 2 trains seeds 2 and 1. xdist would otherwise order the chapters by their number of cells
# (--no-loadscope-reorder keeps this order), which started chapter 2 two minutes late.
NBVAL_FIRST  := $(addprefix chapters/,02_residual_connections.ipynb 06_gradient_measurements.ipynb 07_practice.ipynb \
                  08_fine_tuning.ipynb 04_from_scratch.ipynb 11_appendix.ipynb 09_applications.ipynb)
NBVAL_ORDER  := $(foreach nb,$(NBVAL_FIRST),$(filter $(nb),$(CHAPTERS_NB))) $(filter-out $(NBVAL_FIRST),$(CHAPTERS_NB))

# The Colab simulation: a fresh virtual environment with Colab's torch (torchvision) preinstalled, the package
# installed as each chapter's install cell does it (from a wheel of this checkout instead of GitHub), and each
# chapter's .ipynb executed alone in an empty folder, in the CPU profile, reusing the cache of trained models;
# in nbval's order, longest first (in chapter order the appendix, a minute, ran alone at the end).
COLAB_SIM_DIR     ?= $(CURDIR)/_build/colab-sim
COLAB_SIM_WORKERS ?= 2
# and one Chinese notebook (chapters/zh_CN/, the Chinese edition's Colab button): its install cell adds a CJK
# font and the Chinese figure labels
COLAB_SIM_ZH      ?= chapters/zh_CN/01_background.ipynb

.PHONY: help setup mathjax test unit lint notebooks check-notebooks nbval book html-check browser fashion-mnist clean \
        colab-sim constraints book-zh cjk-font gettext zh-check sweep mutation smoke books book-checks

help:
	@echo "make book             set up .venv and build the book (HTML in _build/html)"
	@echo "make test             set up .venv and run every check CI runs"
	@echo "make notebooks        regenerate chapters/*.ipynb (for Colab) from chapters/*.md"
	@echo "make nbval            execute every chapter notebook with nbval"
	@echo "make html-check       link check and headless-browser test of the built book"
	@echo "make book-zh          build the Chinese edition (中文版) in _build/html-zh"
	@echo "make gettext          update the translation catalogues locales/zh_CN after an English change"
	@echo "make zh-check         the checks on the Chinese edition (catalogues, glossary, built pages)"
	@echo "make colab-sim        run every chapter's .ipynb as Colab would: fresh venv, install cell, empty folder"
	@echo "make smoke            execute every chapter in the gpu and paper profiles on the CPU (fixture data)"
	@echo "make constraints      rewrite constraints.txt from what .venv has installed"
	@echo "make sweep            every chapter under several conditions (threads, CPU kernels, seeds): _build/sweep"
	@echo "make mutation         mutation testing of the core, one of 6 shards of under an hour (MUTATION_SHARD=1..6; report in _build/mutation/report.md)"

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(PIP_INSTALL) -e '.[notebooks,test,book]'
	touch $(STAMP)

# The tested set of versions: what .venv resolved to (run after changing the bounds in pyproject.toml).
constraints: $(STAMP)
	{ sed -n '1,/^# pyproject.toml only/p' $(CONSTRAINTS); \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^#\|^-e '; } > $(CONSTRAINTS).tmp
	mv $(CONSTRAINTS).tmp $(CONSTRAINTS)

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
	$(BIN)/ruff check resnet_tutorial tests scripts book/_ext

unit: setup fashion-mnist
	$(BIN)/python -m pytest tests -q --ignore=tests/test_book_html.py -n $(UNIT_WORKERS) --dist loadfile

# Fashion-MNIST offline (the unit tests, and chapters 1, 2, 4, 5 and 6): Debian's package puts the four gzipped
# idx files in /usr/share/datasets/fashion-mnist/ (as root, like the `browser` target); resnet_tutorial.data unpacks
# them where torchvision reads them. Not root: a warning, since torchvision downloads the data set when online.
fashion-mnist:
	@test -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q --no-install-recommends dataset-fashion-mnist; \
	    else echo "warning: no Debian package dataset-fashion-mnist (sudo apt-get install dataset-fashion-mnist):" \
	      "the chapters will download Fashion-MNIST with torchvision, which needs the network"; fi; }

notebooks: setup
	$(BIN)/python scripts/sync_notebooks.py

check-notebooks: setup
	$(BIN)/python scripts/sync_notebooks.py --check

nbval: setup check-notebooks fashion-mnist
	OMP_NUM_THREADS=$(NBVAL_THREADS) MKL_NUM_THREADS=$(NBVAL_THREADS) \
	$(BIN)/python -m pytest --nbval-lax $(NBVAL_ORDER) -n $(NBVAL_WORKERS) --dist loadfile \
	  --no-loadscope-reorder --nbval-cell-timeout=$(NBVAL_CELL_TIMEOUT) -q

# The sweep of conditions (not in `make test`; the weekly workflow runs it): every chapter executed with 1 and 2
# threads per kernel, with the ATen/oneDNN kernels of an AVX2 CPU (no native bf16) and ATen's default kernels, and
# with every seed shifted by 1 and by 2, in four runs (each retrains every model; `a:b` combines two conditions);
# every check's measured value in every run, in _build/sweep/sweep.md and sweep.json. A claim holds when it holds
# in all of them (scripts/sweep.py). SWEEP_CONDITIONS=base,threads=2,avx2,default,seed+1,seed+2 runs each apart.
SWEEP_CONDITIONS ?= base,threads=2:seed+1,avx2:seed+2,default
sweep: setup check-notebooks fashion-mnist
	$(BIN)/python scripts/sweep.py $(NBVAL_ORDER) --conditions $(SWEEP_CONDITIONS) --out _build/sweep

# BOOK_THREADS=1 runs every chapter's kernel on one thread (OMP_NUM_THREADS), as `make test` does when it builds
# both editions at once (`books`); unset, torch takes every core.
BOOK_THREADS ?=
BOOK_ENV := $(if $(BOOK_THREADS),OMP_NUM_THREADS=$(BOOK_THREADS) MKL_NUM_THREADS=$(BOOK_THREADS))

book: setup fashion-mnist
	$(BOOK_ENV) $(BIN)/jupyter-book build . $(BOOK_FLAGS)
	@echo "Open $(CURDIR)/_build/html/index.html"

# Both editions at once, one chapter at a time each, one thread per kernel: a book build executes its chapters
# one after the other, so one build alone leaves a core idle most of the time (make test: 5.4 to 5.7 minutes
# for both instead of 9.3 one after the other). The output of each is printed when it is done (-O).
books: setup cjk-font conf.py fashion-mnist
	$(MAKE) --no-print-directory -j2 -O book book-zh BOOK_THREADS=1

# The checks on both built editions, at once (each drives its own headless Chromium).
book-checks: setup browser
	$(MAKE) --no-print-directory -j2 -O html-check zh-check

# The Chinese edition (中文版) in _build/html-zh: the same chapters executed again (trained models from the
# experiment cache), their prose from the gettext catalogues locales/zh_CN/LC_MESSAGES/<page>.po (CONTRIBUTING.md).
# Sphinx builds it in _build/zh/html, and _build/html-zh links there: myst-nb writes the executed notebooks beside
# the output folder (<output>/../jupyter_execute), which must not be the English build's _build/jupyter_execute
# when both are built at once (`books`). The language switch finds the editions side by side as html/ and html-zh/.
# Jupyter Book 1's CLI cannot pass the language, so conf.py is generated from _config.yml and sphinx-build is
# called with language=zh_CN; RESNET_TUTORIAL_LANGUAGE makes resnet_tutorial.plots.label draw Chinese figures.
# The build is strict, and a figure with a character no installed font has ("Glyph ... missing") fails it.
# `make gettext` re-extracts the English strings after an English change and updates the catalogues (a
# changed string becomes fuzzy, a new one empty: tests/test_zh.py fails until they are translated).
ZH_HTML       := _build/html-zh
ZH_OUT        := _build/zh/html
BOOK_ZH_FLAGS := -W -n --keep-going -q
# myst-nb's toggle buttons are configuration, not gettext strings: their Chinese is set here.
BOOK_ZH_DEFINES := -D language=zh_CN -D nb_code_prompt_show=显示代码 -D nb_code_prompt_hide=隐藏代码

conf.py: _config.yml _toc.yml $(STAMP)
	$(BIN)/jupyter-book config sphinx .
	@# it leaves out the sys.path entry of _config.yml's local_extensions (book/_ext): add it
	@printf '\nimport os, sys  # noqa\nsys.path.insert(0, os.path.join(os.path.dirname(__file__), "book", "_ext"))\n' >> conf.py

# Debian's Noto CJK fonts for the Chinese figure labels (as root, like the `browser` target).
cjk-font:
	@fc-list :lang=zh family 2>/dev/null | grep -q "Noto Sans CJK SC" || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q --no-install-recommends fonts-noto-cjk; \
	    else echo "error: the Chinese edition needs a CJK font: sudo apt-get install fonts-noto-cjk"; exit 2; fi; }

book-zh: setup cjk-font conf.py fashion-mnist
	RESNET_TUTORIAL_LANGUAGE=zh_CN $(BOOK_ENV) $(BIN)/sphinx-build -b html $(BOOK_ZH_DEFINES) $(BOOK_ZH_FLAGS) . $(ZH_OUT)
	@if [ -d $(ZH_HTML) ] && [ ! -L $(ZH_HTML) ]; then rm -rf $(ZH_HTML); fi  # a folder from an older build
	ln -sfn zh/html $(ZH_HTML)
	@! grep -rl --include='*.html' -e 'Glyph [0-9]* .* missing from' $(ZH_HTML) || \
	  { echo "error: a figure of the Chinese edition has characters its font lacks (above)"; exit 1; }
	@echo "Open $(CURDIR)/$(ZH_HTML)/index.html"

gettext: setup conf.py
	@# a fresh extraction: the templates of a renamed or removed chapter would create a catalogue for it
	@rm -rf _build/gettext && mkdir -p _build
	$(BIN)/sphinx-build -q -b gettext -D nb_execution_mode=off . _build/gettext 2> _build/gettext-warnings.txt
	@grep -v 'mystnb.glue' _build/gettext-warnings.txt || true  # glue warnings: the notebooks are not executed
	$(BIN)/sphinx-intl update -p _build/gettext -l zh_CN -d locales -w 0

zh-check: setup browser
	RESNET_TUTORIAL_REQUIRE_ZH=1 $(BIN)/python -m pytest tests/test_zh.py -q

# Headless Chromium for the browser test (Debian package; CI runs as root on Debian).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  command -v google-chrome >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q --no-install-recommends chromium; \
	    else echo "error: the browser test needs Chromium: sudo apt-get install chromium"; exit 2; fi; }

html-check: setup browser
	RESNET_TUTORIAL_REQUIRE_BOOK=1 $(BIN)/python -m pytest tests/test_book_html.py -q

colab-sim: setup check-notebooks fashion-mnist
	$(BIN)/python scripts/colab_sim.py --workdir $(COLAB_SIM_DIR) --workers $(COLAB_SIM_WORKERS) $(NBVAL_ORDER) \
	  $(COLAB_SIM_ZH)

# Mutation testing of the package's core with mutmut (not part of `make test`). Each module is mutated in a copy
# under _build/mutation/work/ and tested by its own test files (the table in scripts/mutation.py); the survivors
# are in _build/mutation/report.md. All the modules take about three hours on two cores (MINUTES in the script:
# measured, or estimated where no full run has finished), so `make mutation` runs one of MUTATION_SHARDS groups
# of modules balanced by those minutes, each under an hour: MUTATION_SHARD=1 (the default) to 6 in turn add their
# modules to one report (it covers every module run so far), or run at the same time on six machines, and
# `python scripts/mutation.py --merge a/summary.json b/summary.json ...` writes one report from theirs.
# `scripts/mutation.py --list-shards 6` prints the groups; a module longer than an hour (cli.py) is split into parts
# (PARTS in the script). MUTATION_MODULES picks modules instead (e.g. MUTATION_MODULES="checkpoint.py training.py").
# It runs niced, beside other work.
MUTATION_MODULES ?=
MUTATION_SHARDS  ?= 6
MUTATION_SHARD   ?= 1
MUTATION_JOBS    ?= 2
mutation: setup
	nice -n 15 $(BIN)/python scripts/mutation.py --jobs $(MUTATION_JOBS) \
	  $(if $(MUTATION_MODULES),$(MUTATION_MODULES),--shard $(MUTATION_SHARD)/$(MUTATION_SHARDS))

# The gpu and paper profiles, which CI cannot run on a GPU, executed on the CPU (scripts/smoke.py): CIFAR-10
# from a fixture in the official format, torchvision's weights as random-valued files in torch's hub cache,
# every training run capped at SMOKE_MAX_STEPS steps, two notebooks at a time on one thread each; a chapter whose
# code is the same in both profiles runs in gpu only (scripts/smoke.py --every-profile runs it twice). A claim
# that does not hold on the fixture is reported (listed at the end); any other error fails.
SMOKE_DIR       ?= $(CURDIR)/_build/smoke
SMOKE_WORKERS   ?= 2
SMOKE_MAX_STEPS ?= 1

smoke: setup check-notebooks fashion-mnist
	$(BIN)/python scripts/smoke.py --workdir $(SMOKE_DIR) --workers $(SMOKE_WORKERS) --max-steps $(SMOKE_MAX_STEPS) \
	  $(CHAPTERS_NB)

test: lint unit nbval smoke books book-checks colab-sim

clean:
	rm -rf _build .pytest_cache .ruff_cache book/_mathjax
