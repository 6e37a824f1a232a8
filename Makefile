# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv if it is missing and install adasp with its dev extras into it (once;
# again only when pyproject.toml changes).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.adasp-installed

.PHONY: demo test test-fast lint format bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

# The main job: generate the synthetic dataset (first use), evaluate the untrained quick-start
# model, train it (CE + AdaSP, a few minutes on a CPU), evaluate it and print the metrics.
demo: $(STAMP)
	$(PY) -m adasp evaluate --config quickstart --output runs/quickstart-untrained
	$(PY) -m adasp train --config quickstart --output runs/quickstart --resume

# ruff, mypy on src/ (config: [tool.mypy] in pyproject.toml), then every test, the slow ones too: tests/test_wheel.py builds the wheel offline,
# installs it into a fresh venv and trains the quickstart preset from outside the checkout.
# The 25 slowest tests are listed at the end: the suite must stay under 15 minutes on CI.
test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest --durations=25

# The inner loop: every test but the ones marked slow (training runs, subprocesses, DDP, the
# wheel): 35 s on 2 busy cores. One torch thread: on cores other jobs also use, two intra-op
# threads wait on each other and the same tests took 6.5 min (some single tests 1000x longer).
test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/losses.py
	$(PY) benchmarks/evaluation.py
	$(PY) benchmarks/rerank.py
	$(PY) benchmarks/data_loading.py

clean:
	rm -rf runs build *.egg-info src/*.egg-info .pytest_cache
