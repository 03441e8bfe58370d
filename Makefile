# Every target installs what it needs: a virtual environment in .venv (ignored by git),
# reinstalled whenever setup.cfg, pyproject.toml or constraints.txt changes. setup.cfg
# declares compatible version ranges; constraints.txt pins the versions the tests ran with.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: main test lint format slow docs clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

main: $(STAMP)  ## the main job: train, score, sample, save and reload a flow
	$(BIN)/python tools/main_job.py

test: $(STAMP)  ## the default test suite (lint and format checks included), one worker a core
	$(BIN)/python -m pytest -q -n auto --durations=15

slow: $(STAMP)  ## long training runs
	$(BIN)/python -m pytest -q -n auto -m slow

docs: $(STAMP)  ## API documentation from the docstrings, math rendered: out/docs/index.html
	$(BIN)/python -m sphinx -W --keep-going -q -b html tools/docs out/docs

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
