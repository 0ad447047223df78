# The two commands of the README. Each creates .venv when missing and installs the project.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ctbench run --model voxelfm --task survival --weights random

test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 --durations=10

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
