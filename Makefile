# make demo / make test work on a fresh machine: they create .venv, install torch 2.13.0 (the CPU
# wheel) first, then lifelong with its dev extras, and Fashion-MNIST when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)


.PHONY: setup data browser postgres serve-demo bench-serve bench-poison report-screenshot test lint demo bench bench-vision bench-language bench-control bench-control-rl bench-class-il bench-scale bench-data bench-lm text-data clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,text,control,lightning,service,security,logs,data]'
	@rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP) data browser postgres

data:
	@scripts/ensure-data.sh

# PostgreSQL binaries for the service's storage tests (apt-get when missing and root)
postgres:
	@scripts/ensure-postgres.sh

# Debian's chromium for the report's browser test (playwright drives it; no browser download)
browser:
	@sh scripts/ensure-chromium.sh

# one worker per core (each test uses one torch thread); a module's tests share a worker and its fixtures
test: setup
	$(PY) -m pytest -n auto --dist loadscope -rs

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks scripts examples
	$(PY) -m mypy

# The main job, on real data, in about a minute and a half on 2 cores.
demo: setup
	$(VENV)/bin/lifelong compare --benchmark permuted-fmnist --tasks 5 --dropout 0.2 \
		--strategies naive,ewc,si,replay --seeds 0

# Speed and memory of consolidation, as ratios to plain training (results/speed.json), and what the
# Kronecker and projection methods cost beside the diagonal (results/consolidation-cost.json).
bench: setup
	$(PY) benchmarks/speed.py
	$(PY) benchmarks/consolidation_cost.py --sections abc

# The README's tables: each prints its tables and writes results/<name>-<setting>.json; --resume reuses
# the runs already saved with the same configuration. Hyperparameters come from results/tuning/
# (benchmarks/tune.py, on validation data). `python benchmarks/tables.py --readme` then rewrites the
# README's tables from the result files. BENCH_FLAGS=--threads 1 makes runs bit-for-bit reproducible.
BENCH_FLAGS ?= --threads 1 --resume
CLASS_IL_KEY := naive,joint,replay,der++,er-ace,icarl,replay+bic,der+++bic
bench-vision: setup
	$(PY) benchmarks/vision.py $(BENCH_FLAGS) --settings permuted --strategies naive,replay,ewc,online-ewc,si,mas,ewc+replay,gpm,online-kfac-ewc
	$(PY) benchmarks/vision.py $(BENCH_FLAGS) --settings permuted --strategies joint --seeds 0
	$(PY) benchmarks/vision.py $(BENCH_FLAGS) --settings split-task,split-class
	$(PY) benchmarks/vision.py $(BENCH_FLAGS) --settings permuted-50 --seeds 0 \
		--strategies naive,gpm,online-kfac-ewc,online-ewc,ewc

bench-language: setup
	$(PY) benchmarks/language.py $(BENCH_FLAGS) --settings frozen-task
	$(PY) benchmarks/language.py $(BENCH_FLAGS) --settings frozen-class \
		--strategies naive,joint,replay,ewc,online-ewc,si,mas,ewc+replay,der++,er-ace,ncm
	$(PY) benchmarks/language.py $(BENCH_FLAGS) --settings finetune-task
	$(PY) benchmarks/language.py $(BENCH_FLAGS) --settings finetune-class

bench-control: setup
	$(PY) benchmarks/control.py $(BENCH_FLAGS) --settings lander-rewired,classic
	$(PY) benchmarks/control.py $(BENCH_FLAGS) --settings rl-cartpole-rewired --seeds 0 --strategies naive,ewc
	$(MAKE) bench-control-rl

bench-control-rl: setup
	$(PY) benchmarks/control_rl_study.py --threads 1
	$(PY) benchmarks/control_rl.py all --threads 1

bench-class-il: setup
	$(PY) benchmarks/class_il.py $(BENCH_FLAGS) --settings split-fmnist-random,split-fmnist-fixed,split-digits
	$(PY) benchmarks/class_il.py $(BENCH_FLAGS) --settings split-fmnist-200,split-fmnist-2000,split-fmnist-5ep \
		--strategies $(CLASS_IL_KEY)

bench-scale: setup
	OMP_NUM_THREADS=1 $(PY) benchmarks/scale.py

# Language models that keep learning (docs/language-models.md): the Debian text packages, validation
# tuning, the probe, the scaling study, facts, and the cost table (about 3 core-hours in all).
text-data:
	@scripts/ensure-text-data.sh

LM := $(PY) benchmarks/lm.py run --threads 1 --resume
LM_SIZES := gpt-0.2m,gpt-1m
bench-lm: setup text-data
	$(LM) --setting domains --split valid --sizes $(LM_SIZES) --methods naive,replay
	$(LM) --setting domains --split valid --sizes $(LM_SIZES) --methods ewc --set strength=0.1,1,10,100
	$(LM) --setting domains --split valid --sizes $(LM_SIZES) --methods distill+replay --set weight=0.3,1,3
	$(PY) benchmarks/lm.py choose --setting domains --method ewc --sizes $(LM_SIZES)
	$(PY) benchmarks/lm.py choose --setting domains --method distill+replay --sizes $(LM_SIZES)
	$(LM) --setting domains --sizes gpt-0.2m,gpt-1m --seeds 0,1,2 --methods naive,replay,ewc,ewc+replay,distill+replay
	$(LM) --setting domains --sizes gpt-4m --seeds 0 --methods naive,replay,ewc,ewc+replay,distill+replay
	$(LM) --setting domains --sizes gpt-4m --seeds 0 --methods ewc+replay,distill+replay --equal-bytes
	$(LM) --setting probe --seeds 0 --methods naive,ewc,replay,ewc+replay
	$(LM) --setting facts --seeds 0 --methods naive,replay,ewc,ewc+replay,distill+replay
	for size in gpt-10m gpt-100m gpt-350m; do OMP_NUM_THREADS=1 $(PY) benchmarks/lm_cost.py measure --sizes $$size; done
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --nproc_per_node 2 benchmarks/lm_cost.py fsdp --size gpt-10m
	for s in probe domains facts; do $(PY) benchmarks/lm.py table --setting $$s; done
	$(PY) benchmarks/lm_cost.py table

# An intent classifier learns 2 new CLINC150 domains from users' feedback while serving, then rolls back.
serve-demo: setup
	$(PY) scripts/serve_demo.py

bench-serve: setup
	$(PY) benchmarks/serve_load.py

# Poisoned feedback against the screens and ART's defences (results/poisoning.json); thresholds come
# from results/poisoning-tuning.json (benchmarks/poisoning.py --tune, on validation scenarios).
bench-poison: setup
	$(PY) benchmarks/poisoning.py

# The README's report screenshot, from a real comparison on Permuted digits.
report-screenshot: setup
	$(PY) scripts/report_screenshot.py --out docs/report.png

# Peak resident memory of a stream from a generated 1 GiB CSV, both readers (results/data-memory.json,
# docs/your-data.md); the CSV is written once into $TMPDIR/lifelong-bench/.
bench-data: setup
	$(PY) benchmarks/data_memory.py --resume
	$(PY) benchmarks/data_memory.py --resume --reader csv-module
	$(PY) benchmarks/data_memory.py --table

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
