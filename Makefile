# Two entry points: `make run` and `make test`. Both set up everything they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The Smart Turn v3.2 end-of-turn model ([turn] detector = "smart"), from the pinned pipecat-ai wheel.
SMART_TURN := server/turn/data/smart-turn-v3.2-cpu.onnx

.PHONY: run test bench system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) scripts/fetch-smart-turn.py --dest $(SMART_TURN)
	touch $(STAMP)

# Also fetched again if the file went missing after the install.
$(SMART_TURN): scripts/fetch-smart-turn.py | $(STAMP)
	$(PY) scripts/fetch-smart-turn.py --dest $(SMART_TURN)

system-deps:
	@bash scripts/system-deps.sh

run: system-deps $(STAMP) $(SMART_TURN)
	$(PY) -m server --config config.toml

test: system-deps $(STAMP) $(SMART_TURN)
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: system-deps $(STAMP) $(SMART_TURN)
	$(PY) -m bench

clean:
	rm -rf $(VENV) test-output
