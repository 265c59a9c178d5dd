# Quick start on a fresh machine (Python >= 3.10 and make):
#   make demo   train and evaluate the tumour U-Net on synthetic data
#   make test   run the test suite
# The first run creates .venv/ and installs brain_tf (editable) with its test and onnx
# extras (so the ONNX export tests run); later runs reuse it and re-install only when
# setup.cfg, pyproject.toml or this Makefile changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# test processes side by side (a test file stays in one, in order: its fixtures are built once)
TEST_WORKERS ?= 2

.PHONY: demo test bench clean

$(STAMP): setup.cfg pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "brain_tf needs Python >= 3.10 (found " + sys.version.split()[0] + "); set PYTHON=python3.x")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test,onnx]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/brain-tf demo

test: $(STAMP)
	@$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no tests were collected" >&2; fi; exit $$rc

bench: $(STAMP)
	$(BIN)/python bench/pipeline_throughput.py
	$(BIN)/python bench/sliding_window.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
