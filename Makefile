# make demo / make test work on a fresh machine: they create .venv, install torch 2.13.0 (the CPU
# wheel) first, then lifelong with its dev extras, and Fashion-MNIST when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: setup data test lint demo bench-vision tune clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,text,control]'
	@rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP) data

data:
	@scripts/ensure-data.sh

test: setup
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m mypy

# The main job, on real data, in about a minute and a half on 2 cores.
demo: setup
	$(VENV)/bin/lifelong compare --benchmark permuted-fmnist --tasks 5 --dropout 0.2 \
		--strategies naive,ewc,si,replay --seeds 0

# The README's vision table: 3 seeds, every strategy, three settings (about an hour on 2 cores).
bench-vision: setup
	$(PY) benchmarks/vision.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
