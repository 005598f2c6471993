# Two entry points: `make run` and `make test`. Both set up everything they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

run: system-deps $(STAMP)
	$(PY) -m server --config config.toml

test: system-deps $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: system-deps $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) test-output
