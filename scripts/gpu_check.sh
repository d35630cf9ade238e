#!/usr/bin/env bash
# One GPU check in two phases, each fitting its share of a 15-minute GPU window (issue 14):
#   nodata (<= 3 min): CUDA kernel and augmentation tests, kernel bench, step bench (where `python -m bench
#          step-bench` exists), a compile warm-up on random images (fills Inductor's cache; compile time apart).
#          Needs no data: it can run while the data is still on its way.
#   data   (<= 8 min): pipeline bench; the `fast` races of both recipes; the ladder on the fast recipe; the `eager`
#          baselines of both recipes (side by side: each is bound by its own 2-worker DataLoader); the leaderboard.
#   all:   nodata, then data.
# Every step runs under its own `timeout`, cut further so that no phase outlasts its budget; a step with no budget
# left is skipped with one line. Results go to OUT/gpu-check-PHASE.tar.gz (one file); the summary is printed last.
# Installs nothing; data from $CIFAR10_DIR; rows name the code by $BENCH_GIT_COMMIT where the tree has no .git.
# With ../shared/device/stage's .device-carry/ in the tree, its unpacker runs first (data parts, wheels).
# Usage: scripts/gpu_check.sh OUT [PYTHON] [PHASE]    (make PYTHON=python3 gpu-check PHASE=nodata OUT=...)
set -uo pipefail
OUT=${1:?usage: gpu_check.sh OUT [PYTHON] [nodata|data|all]}
PY=${2:-python3}
PHASE=${3:-all}
cd "$(dirname "$0")/.."
case "$PHASE" in nodata|data|all) ;; *) echo "gpu-check: PHASE=$PHASE is not one of nodata, data, all" >&2; exit 2;; esac
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)"; then
  echo "gpu-check: no CUDA device is visible to $PY (torch.cuda.is_available() is False); nothing was run" >&2
  exit 3
fi
if [ -f .device-carry/bin/unpack ] && [ "${GPU_CHECK_UNPACK:-1}" = 1 ]; then  # data parts and wheels carried so far
  . .device-carry/bin/unpack
fi
if [ "$PHASE" != nodata ] && { [ -z "${CIFAR10_DIR:-}" ] || [ ! -d "$CIFAR10_DIR" ]; }; then
  echo "gpu-check: PHASE=$PHASE needs CIFAR10_DIR set to the cifar-10-batches-bin folder (got '${CIFAR10_DIR:-}');" \
       "PHASE=nodata needs no data" >&2
  exit 2
fi
if [ -z "${BENCH_GIT_COMMIT:-}" ]; then BENCH_GIT_COMMIT=$(git rev-parse --short=12 HEAD 2>/dev/null || true); fi
export CIFAR10_DIR BENCH_GIT_COMMIT PYTHONUNBUFFERED=1
W="$OUT/gpu-check-$PHASE"  # everything this check writes; tarred at the end (left as is if the check is killed)
R="$W/results"
mkdir -p "$R"
: > "$W/steps.txt"
: > "$W/notes.txt"
start=$(date +%s)  # each phase's budget counts from here (nodata) or from its own start (data after nodata)
deadline=$start

note() { echo "gpu-check: $*" | tee -a "$W/notes.txt"; }
left() { echo $(( deadline - $(date +%s) )); }
limit_for() {  # limit_for WANTED: the step's own limit, cut to what the phase has left
  local l; l=$(left); [ "$1" -lt "$l" ] && l=$1; echo "$l"
}
step() {  # step NAME SECONDS CMD...: run under a time limit, log to W/NAME.log, record the exit code (124: limit hit)
  local name=$1 lim; lim=$(limit_for "$2"); shift 2
  if [ "$lim" -le 0 ]; then echo "$name skipped: the phase's budget is spent" | tee -a "$W/steps.txt"; return; fi
  echo "=== $name (limit ${lim}s) ==="
  local t0; t0=$(date +%s)
  timeout "$lim" "$@" 2>&1 | tee "$W/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "$name rc=$rc $(( $(date +%s) - t0 ))s (limit ${lim}s)$([ $rc = 124 ] && echo ': stopped by its limit')" \
    | tee -a "$W/steps.txt"
}
has_albumentations() { "$PY" -c "import albumentations" >/dev/null 2>&1; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  "$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), 'cudnn', torch.backends.cudnn.version())"
  "$PY" -c "import triton; print('triton', triton.__version__)" 2>/dev/null || echo "triton: not installed"
  "$PY" -c "import nvidia.dali as d; print('dali', d.__version__)" 2>/dev/null || echo "dali: unavailable (not installed)"
  has_albumentations && echo "albumentations: installed" || echo "albumentations: not installed"
  echo "git commit: ${BENCH_GIT_COMMIT:-unknown (no .git here and BENCH_GIT_COMMIT unset: rows read git_commit=unknown)}"
} | tee "$W/device.txt"

if [ "$PHASE" != data ]; then
  deadline=$(( start + ${NODATA_BUDGET_S:-180} ))
  step tests 75 "$PY" -m pytest -q -p no:cacheprovider -m "not slow" tests/test_bn_relu.py tests/test_model_kernels.py \
    tests/test_augment.py tests/test_step.py
  step kernels 35 "$PY" -m bench kernel-bench --results-dir="$R" --dtypes=bf16 --layouts=channels_last
  if "$PY" -m bench step-bench --help >/dev/null 2>&1; then
    step step-bench 60 "$PY" -m bench step-bench --results-dir="$R" --compile-modes=off,reduce-overhead,graph
  else
    note "step-bench skipped: this tree has no \`python -m bench step-bench\` command"
  fi
  step compile-warmup 40 "$PY" scripts/compile_warmup.py --preset=fast --variants=compile,cuda-graphs
  if "$PY" -m bench profile --help >/dev/null 2>&1; then  # per-step device-busy fraction, kernels, top ops
    for mode in default reduce-overhead graph; do  # the logs say whether CUDA graphs captured, and why not
      step "profile-$mode" 20 env TORCH_LOGS=cudagraphs,recompiles,graph_breaks "$PY" -m bench profile \
        --preset=fast --variant=fast --steps=5 --warmup=3 --compile="$mode" --warmup_steps=3 --results-dir="$R"
    done
  fi
fi

if [ "$PHASE" != nodata ]; then
  [ "$PHASE" = data ] && t=$start || t=$(date +%s)
  deadline=$(( t + ${DATA_BUDGET_S:-480} - 15 ))  # 15 s kept for the leaderboard
  step pipeline 35 "$PY" -m bench pipeline-bench --results-dir="$R" --time-cap-s=8 --rounds=2
  step race-seed 70 "$PY" -m bench race --preset=seed --profile=full --runs=1 --variants=fast --results_dir="$R"
  step race-fast 45 "$PY" -m bench race --preset=fast --profile=full --runs=1 --variants=fast --results_dir="$R"
  # the ladder's `eager` rung is the fast recipe's eager baseline below (same variant, same rows)
  step ladder 150 "$PY" -m bench ladder --preset=fast --profile=full \
    --rungs=device,bf16,channels-last,compile,cuda-graphs,triton --results_dir="$R"
  if has_albumentations; then
    note "eager baselines of both recipes run side by side (each bound by its own 2-worker DataLoader; 2 x 3 of 16 cores)"
    step eager "${EAGER_LIMIT_S:-190}" bash -c '
      "$1" -m bench run --preset=seed --variant=eager --profile=full --results_dir="$2" > "$3/eager-seed.log" 2>&1 &
      a=$!
      "$1" -m bench run --preset=fast --variant=eager --profile=full --results_dir="$2" > "$3/eager-fast.log" 2>&1 &
      b=$!
      trap "kill $a $b 2>/dev/null" TERM
      wait $a; ra=$?; wait $b; rb=$?
      echo "eager seed rc=$ra, eager fast rc=$rb"; exit $(( ra | rb ))' _ "$PY" "$R" "$W"
  else
    note "eager skipped: albumentations is not installed (the eager baseline's DataLoader needs it; ../shared/device/stage carries its wheels)"
  fi
  deadline=$(( deadline + 15 ))
  step leaderboard 15 "$PY" -m bench leaderboard --results-dir="$R"
fi

elapsed=$(( $(date +%s) - start ))
{ echo "=================== gpu-check $PHASE summary (${elapsed} s) ==================="
  cat "$W/device.txt" "$W/notes.txt" "$W/steps.txt"
  [ -f "$W/tests.log" ] && grep -E "passed|failed|error" "$W/tests.log" | tail -1
  for f in kernels step-bench compile-warmup profile-default profile-reduce-overhead profile-graph pipeline race-seed race-fast ladder eager eager-seed eager-fast; do
    [ -f "$W/$f.log" ] || continue
    echo "--- $f"
    grep -E "^\||^device:|^compile warm-up|: unavailable|^(device|dali|dataloader): |skipped|reached|rc=" "$W/$f.log" | head -40
  done
  [ -f "$R/leaderboard.md" ] && { echo "--- leaderboard"; grep -E "^#|^\|" "$R/leaderboard.md"; }
} > "$W/summary.txt"
if tar -czf "$OUT/gpu-check-$PHASE.tar.gz" -C "$OUT" "gpu-check-$PHASE"; then
  echo "results: $OUT/gpu-check-$PHASE.tar.gz (scripts/import_runs.py brings its runs into results/)"
  cat "$W/summary.txt"
  rm -rf "$W"
else
  echo "gpu-check: tar failed; the results stay in $W"
  cat "$W/summary.txt"
fi
