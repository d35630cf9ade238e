# Two commands from a fresh clone: `make bench` and `make test`. Each creates .venv and installs what is
# missing on first use; later calls reuse it. `make PYTHON=python3 ...` uses that interpreter as it is
# and installs nothing (GPU boxes with a preinstalled torch and no network).
PYTHON ?=
PRESET ?= seed
PROFILE ?= auto
RUNS ?= 1
VARIANTS ?= eager,fast
ARGS ?=
OUT ?= out/gpu-check
TORCH_PIN ?= torch==2.13.0
GPUS ?= 1
PHASE ?= nodata
LADDER ?=
MUTANTS ?=

ifeq ($(strip $(PYTHON)),)
VENV := .venv
PY := $(VENV)/bin/python
SETUP := $(VENV)/.installed
else
PY := $(PYTHON)
SETUP :=
endif

.PHONY: bench ladder test test-all mutants setup profile leaderboard bench-pipeline bench-step bench-kernels kernels-static gpu-check gpu-check-rehearsal lr-find report choose-fast clean-venv

setup: $(SETUP)

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_PIN)"
	$(PY) -m pip install -e ".[dev,triton]"
	@# DALI is optional (about 200 MB); where it cannot install, its pipeline and tests report it unavailable
	-$(PY) -m pip install nvidia-dali-cuda130 || echo "DALI could not be installed: the dali pipeline is unavailable"
	touch $@

# GPUS=N > 1 launches one process per GPU with torchrun (DDP); the global batch stays the recipe's.
ifeq ($(strip $(GPUS)),1)
LAUNCH := $(PY) -m bench
else
LAUNCH := $(PY) -m torch.distributed.run --standalone --nproc_per_node=$(GPUS) -m bench
endif

# LADDER=1: the variant ladder (eager -> +device -> +bf16 -> +channels-last -> +compile -> +CUDA graphs -> +Triton)
bench: $(SETUP)
ifneq ($(strip $(GPUS)),1)
	@# one process checks the inputs first: a refusal is one line, not one per rank plus torchrun's report
	@WORLD_SIZE=$(GPUS) $(PY) -m bench race --dry-run --preset=$(PRESET) --profile=$(PROFILE) --runs=$(RUNS) --variants=$(VARIANTS) $(ARGS) >/dev/null
endif
ifeq ($(strip $(LADDER)),1)
	$(LAUNCH) ladder --preset=$(PRESET) --profile=$(PROFILE) --runs=$(RUNS) $(ARGS)
else
	$(LAUNCH) race --preset=$(PRESET) --profile=$(PROFILE) --runs=$(RUNS) --variants=$(VARIANTS) $(ARGS)
endif

ladder: $(SETUP)
	$(LAUNCH) ladder --preset=$(PRESET) --profile=$(PROFILE) --runs=$(RUNS) $(ARGS)

# make test: the suite without the two `slow` learning checks (about 4 min each on a 2-core CPU without native bf16);
# make test-all: everything. One worker per core (pytest-xdist; each worker's torch takes its share of the cores);
# the tests marked `long` are handed out first (tests/conftest.py). An interpreter without pytest-xdist
# (make PYTHON=... test) runs them in one process.
XDIST = $(shell $(PY) -c "import xdist" 2>/dev/null && echo "-n auto")
test: $(SETUP)
	$(PY) -m pytest -q $(XDIST) -m "not slow" tests

test-all: $(SETUP)
	$(PY) -m pytest -q $(XDIST) tests

# Mutation testing (not in CI; CPU-heavy, about an hour on 2 cores): mutmut mutates the modules listed in pyproject's
# [tool.mutmut] in a copy under mutants/, and runs per mutant only the tests that executed its function.
# MUTANTS="bench.core.ema.*" limits the run to matching mutant names; `$(PY) -m mutmut results` lists the survivors.
# Scores and the survivors judged harmless: docs/mutants.md.
DATA_DIR := $(abspath ../shared/data/cifar-10-batches-bin)
mutants: $(SETUP)
	@# one thread: a child forked from a process whose OpenMP pool ran hangs in its first parallel op (seen here)
	OMP_NUM_THREADS=1 CIFAR10_DIR=$${CIFAR10_DIR:-$(if $(wildcard $(DATA_DIR)),$(DATA_DIR))} nice -n 10 $(PY) -m mutmut run --max-children 1 $(MUTANTS)

leaderboard: $(SETUP)
	$(PY) -m bench leaderboard

lr-find: $(SETUP)
	$(PY) -m bench lr-find --preset=$(PRESET) --profile=full $(ARGS)

report: $(SETUP)
	@test -n "$(RUN)" || { echo "usage: make report RUN=<run_id> (see results/runs.csv)"; exit 2; }
	$(PY) -m bench report $(RUN)

choose-fast: $(SETUP)
	$(PY) -m bench choose-fast $(ARGS)

bench-pipeline: $(SETUP)
	$(PY) -m bench pipeline-bench $(ARGS)

bench-step: $(SETUP)
	$(PY) -m bench step-bench $(ARGS)

# torch.profiler over warm steps of a variant: trace.json, steps.csv, top_ops.md in results/profiles/<id>/
profile: $(SETUP)
	$(PY) -m bench profile --preset=$(if $(filter seed,$(PRESET)),fast4,$(PRESET)) $(ARGS)

bench-kernels: $(SETUP)
	$(PY) -m bench kernel-bench $(ARGS)

# the Triton kernels compiled for sm_80 and sm_90 on this CPU (no GPU): results/kernels_static.csv
kernels-static: $(SETUP)
	$(PY) -m bench kernel-static $(ARGS)

# One device call each: PHASE=nodata (<= 240 s, no data needed), then PHASE=data (<= 420 s, CIFAR10_DIR); PHASE=all is
# refused (about 660 s, more than one call). Results in OUT/gpu-check-PHASE.tar.gz; docs/gpu-check.md
gpu-check:
	bash scripts/gpu_check.sh "$(OUT)" "$(if $(strip $(PYTHON)),$(PYTHON),python3)" "$(PHASE)"

# Both phases on this CPU, the CUDA probe stood in and every step at tiny sizes; fails unless every step ran and
# wrote its output, the tarballs fit, and scripts/import_runs.py brings them back (.ci/run runs it after make test)
gpu-check-rehearsal: $(SETUP)
	bash scripts/gpu_check_rehearsal.sh "$(OUT)" "$(PY)"

clean-venv:
	rm -rf $(VENV)
