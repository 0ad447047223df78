# The two commands of the README. Each creates .venv when missing and installs the project.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# demo: the random-init VoxelFM control, then the reference rows (baselines, oracle ceiling, chance
# floor) on the same phantom task and trial budget, ranked in the terminal and published as HTML.
DEMO_MODELS := hu-histogram,thumbnail,oracle,chance
DEMO_SITE := demo-site

demo: $(STAMP)
	$(VENV)/bin/ctbench run --model voxelfm --task survival --weights random
	$(VENV)/bin/ctbench bench --models $(DEMO_MODELS) --tasks survival
	$(VENV)/bin/ctbench leaderboard show --dataset phantom --tasks survival
	$(VENV)/bin/ctbench leaderboard publish --out $(DEMO_SITE)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 --durations=10

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
