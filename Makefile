# One command to set up and build the book, one to set up and pass the tests.
# Everything is installed into .venv inside the checkout, from pyproject.toml.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: help setup test unit lint book clean

help:
	@echo "make book   set up .venv and build the book (HTML in _build/html)"
	@echo "make test   set up .venv and run every check CI runs"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e '.[test,book]'
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(BIN)/ruff check resnet_tutorial tests

unit: setup
	$(BIN)/python -m pytest tests -q

test: lint unit

book: setup
	@echo "The book is not written yet."

clean:
	rm -rf _build .pytest_cache .ruff_cache
