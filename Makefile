# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv if it is missing and install adasp with its dev extras into it (once;
# again only when pyproject.toml changes).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.adasp-installed

.PHONY: demo test lint format bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

# The main job: generate the synthetic dataset (first use), evaluate the untrained quick-start
# model, train it (CE + AdaSP, a few minutes on a CPU), evaluate it and print the metrics.
demo: $(STAMP)
	$(PY) -m adasp evaluate --config quickstart --output runs/quickstart-untrained
	$(PY) -m adasp train --config quickstart --output runs/quickstart --resume

# ruff, then every test, the slow ones too: tests/test_wheel.py builds the wheel offline,
# installs it into a fresh venv and trains the quickstart preset from outside the checkout.
test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

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
