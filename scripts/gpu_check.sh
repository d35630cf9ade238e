#!/usr/bin/env bash
# One GPU check in two phases, each one device call, together fitting a 15-minute GPU window (900 s of device time,
# about a minute of start-up and transfers included, leaves 660 s: nodata 240 s, then data 420 s).
#   nodata: the compiled step (step bench: off, default, reduce-overhead, graph at batch 512, and whether CUDA graphs
#           captured), the CUDA-only tests, kernel bench, profiles (default, reduce-overhead, graph), a short
#           compile=graph training run on random images. Needs no data.
#   data:   the fast4 recipe's `fast` race beside its `eager` baseline, the seed recipe's `fast`, the ladder on the
#           fast4 recipe, the pipeline bench.
#   all:    refused: the two phases need about 660 s, more than one call's 600 s.
# Steps run most valuable first (docs/gpu-check.md: what each answers, its expected seconds and limit). Each runs
# under `timeout -s INT -k 15` (SIGINT: Python and pytest unwind and say what finished; rows already written stay),
# its limit cut to what the phase has left; a step that no longer fits is cut with one line. Results go to
# OUT/gpu-check-PHASE.tar.gz (one file, under 12 MiB: PNGs left out, a report rebuilds them); the summary is
# printed last. Installs nothing; data from $CIFAR10_DIR; rows name the code by $BENCH_GIT_COMMIT where the tree
# has no .git. With ../shared/device/stage's .device-carry/ in the tree, its unpacker runs first.
# The rehearsal (scripts/gpu_check_rehearsal.sh) runs this on a CPU: GPU_CHECK_CUDA_STANDIN=1 stands the CUDA probe
# in and lets CUDA-only modes run through their CPU stand-ins; GPU_CHECK_* below shrink every step.
# Usage: scripts/gpu_check.sh OUT [PYTHON] [nodata|data]   (make PYTHON=python3 gpu-check PHASE=nodata OUT=...)
set -uo pipefail
OUT=${1:?usage: gpu_check.sh OUT [PYTHON] [nodata|data]}
PY=${2:-python3}
PHASE=${3:-nodata}
cd "$(dirname "$0")/.."
case "$PHASE" in
  nodata|data) ;;
  all) echo "gpu-check: PHASE=all needs about 660 s, more than one device call's 600 s: run PHASE=nodata, then PHASE=data" >&2
       exit 2;;
  *) echo "gpu-check: PHASE=$PHASE is not one of nodata, data (two calls: nodata first)" >&2; exit 2;;
esac
STANDIN=${GPU_CHECK_CUDA_STANDIN:-0}
if [ "$STANDIN" != 1 ] && [ -f .device-carry/bin/unpack ] && [ "${GPU_CHECK_UNPACK:-1}" = 1 ]; then
  . .device-carry/bin/unpack  # data parts and wheels carried so far
fi
if [ "$PHASE" = data ] && { [ -z "${CIFAR10_DIR:-}" ] || [ ! -d "$CIFAR10_DIR" ]; }; then
  echo "gpu-check: PHASE=data needs CIFAR10_DIR set to the cifar-10-batches-bin folder (got '${CIFAR10_DIR:-}');" \
       "PHASE=nodata needs no data" >&2
  exit 2
fi
start=$(date +%s)
# one interpreter start for the probe and the device facts (each start imports torch: seconds of the window)
if [ "$STANDIN" = 1 ]; then export BENCH_CUDA_STANDIN=1; fi
probe=$("$PY" - 2>&1 <<'EOF'
import importlib.util, os, sys
import torch
standin = os.environ.get("BENCH_CUDA_STANDIN") == "1"
if not torch.cuda.is_available() and not standin:
    sys.exit(3)
name = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (CUDA stand-in: a rehearsal, no GPU figure)"
print("torch", torch.__version__, name, "cudnn", torch.backends.cudnn.version())
for mod, label in (("triton", "triton"), ("nvidia.dali", "dali"), ("albumentations", "albumentations")):
    try:
        found = importlib.util.find_spec(mod) is not None
    except ModuleNotFoundError:
        found = False
    print(f"{label}: {'installed' if found else 'unavailable (not installed)'}")
EOF
)
rc=$?
if [ $rc = 3 ]; then
  echo "gpu-check: no CUDA device is visible to $PY (torch.cuda.is_available() is False); nothing was run" >&2
  exit 3
elif [ $rc != 0 ]; then
  echo "gpu-check: $PY cannot import torch: $(echo "$probe" | tail -1)" >&2
  exit 2
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [ -z "${BENCH_GIT_COMMIT:-}" ]; then BENCH_GIT_COMMIT=$(git rev-parse --short=12 HEAD 2>/dev/null || true); fi
export CIFAR10_DIR BENCH_GIT_COMMIT PYTHONUNBUFFERED=1
W="$OUT/gpu-check-$PHASE"  # everything this check writes; tarred at the end
R="$W/results"
rm -rf "$W"
mkdir -p "$R"
: > "$W/steps.txt"
: > "$W/notes.txt"

# Sizes: the real ones by default; the rehearsal shrinks them
BATCH=${GPU_CHECK_BATCH:-512}              # step bench and profiles
STEP_STEPS=${GPU_CHECK_STEP_STEPS:-20}     # timed steps per step-bench row
PROFILE_STEPS=${GPU_CHECK_PROFILE_STEPS:-5}
WARMUP_IMAGES=${GPU_CHECK_WARMUP_IMAGES:-1024}  # compile=graph run on random images: training, test images
WARMUP_TEST=${GPU_CHECK_WARMUP_TEST:-10000}
read -r -a TRAIN_ARGS <<< "${GPU_CHECK_TRAIN_ARGS:-}"  # extra overrides for the races and the ladder
read -r -a PIPE_ARGS <<< "${GPU_CHECK_PIPELINE_ARGS:---time-cap-s=8 --rounds=2}"
# timeout -k: SIGKILL this long after SIGINT, so a step that ignores SIGINT still ends. The tests shrink it, so that
# a kill costs them seconds, not a minute
KILL_GRACE=${GPU_CHECK_KILL_GRACE_S:-15}
RESERVE=10  # kept for the summary and the tarball
MAX_TAR=${GPU_CHECK_MAX_TAR_BYTES:-12582912}  # 12 MiB: a call brings back files of up to 16 MiB

note() { echo "gpu-check: $*" | tee -a "$W/notes.txt"; }
left() { echo $(( deadline - $(date +%s) )); }
step() {  # step NAME EXPECTED_S LIMIT_S CMD...: run under its limit (cut to what is left), log to W/NAME.log
  local name=$1 expect=$2 lim=${GPU_CHECK_LIMIT_S:-$3} l; shift 3
  l=$(( $(left) - KILL_GRACE ))
  [ "$lim" -gt "$l" ] && lim=$l
  if [ "$l" -lt $(( expect / 2 )) ] || [ "$lim" -lt 1 ]; then
    echo "$name cut: $(left) s left of the phase's budget, it needs about ${expect} s" | tee -a "$W/steps.txt"
    return
  fi
  echo "=== $name (expected ${expect}s, limit ${lim}s) ==="
  local t0; t0=$(date +%s)
  # (a child the step leaves behind holding its output would keep tee, and the check, waiting: the steps are Python
  # commands, whose children end with them)
  timeout -s INT -k "$KILL_GRACE" "$lim" "$@" 2>&1 | tee "$W/$name.log"
  local rc=${PIPESTATUS[0]}
  local why=""
  case $rc in 124) why=": stopped by its limit (SIGINT)";; 137) why=": killed $KILL_GRACE s after its limit (SIGKILL)";; esac
  echo "$name rc=$rc $(( $(date +%s) - t0 ))s (expected ${expect}s, limit ${lim}s)$why" | tee -a "$W/steps.txt"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  echo "$probe"
  echo "git commit: ${BENCH_GIT_COMMIT:-unknown (no .git here and BENCH_GIT_COMMIT unset: rows read git_commit=unknown)}"
  [ "$STANDIN" = 1 ] && echo "CUDA stand-in: GPU_CHECK_CUDA_STANDIN=1 (a CPU rehearsal at tiny sizes; no figure here is a GPU's)"
} | tee "$W/device.txt"
deadline=$(( start + ${GPU_CHECK_BUDGET_S:-$([ "$PHASE" = nodata ] && echo 240 || echo 420)} - RESERVE ))
LOGS=(TORCH_LOGS=cudagraphs,recompiles,graph_breaks)  # "skipping cudagraphs due to ...", recompiles, graph breaks

if [ "$PHASE" = nodata ]; then
  # (c) the compiled step, each mode's graphs, graph breaks and CUDA-graph skips; rows appended one by one
  step step-bench 80 110 env "${LOGS[@]}" "$PY" -m bench step-bench --results-dir="$R" --batch-sizes="$BATCH" \
    --steps="$STEP_STEPS" --compile-modes=off,default,reduce-overhead,graph
  # (d) the tests that need CUDA only (-k cuda: a cuda device parameter or the cuda marker), names of each outcome
  step tests 75 90 "$PY" -m pytest -v -rA -p no:cacheprovider -m "not slow" -k cuda tests/test_bn_relu.py \
    tests/test_model_kernels.py tests/test_augment.py tests/test_step.py
  step kernels 55 70 "$PY" -m bench kernel-bench --results-dir="$R" --dtypes=bf16 --layouts=channels_last
  # (f) profiles of fast's step; the step bench compiled the same graphs, so Inductor's cache serves most of them
  for mode in default reduce-overhead graph; do
    step "profile-$mode" 25 40 env "${LOGS[@]}" "$PY" -m bench profile --preset=fast4 --variant=fast \
      --steps="$PROFILE_STEPS" --warmup=3 --compile="$mode" --warmup_steps=3 --batch_size="$BATCH" --results-dir="$R"
  done
  # compile=graph through train() (bench run's path: the evaluation model compiled under the step's mode)
  step graph-run 35 50 env "${LOGS[@]}" "$PY" scripts/compile_warmup.py --preset=fast4 --variants=fast \
    --train-images="$WARMUP_IMAGES" --test-images="$WARMUP_TEST" --compile=graph --warmup_steps=3 "${TRAIN_ARGS[@]}"
else
  # (a) + (b): the fast4 recipe's fast variant, then its eager baseline, one race (rows written as each finishes)
  variants=fast,eager
  if ! grep -q "albumentations: installed" <<< "$probe"; then
    variants=fast
    note "eager baseline left out: albumentations is not installed (its DataLoader needs it; ../shared/device/stage carries its wheels)"
  fi
  step race-fast 115 160 "$PY" -m bench race --preset=fast4 --profile=full --runs=1 --variants="$variants" \
    --results_dir="$R" "${TRAIN_ARGS[@]}"
  # (e) the seed recipe's fast variant (its eager baseline ran on 2026-11-28: 156.2 s, row 20261128-184806-092916)
  step race-seed 60 80 "$PY" -m bench race --preset=seed --profile=full --runs=1 --variants=fast --results_dir="$R" \
    "${TRAIN_ARGS[@]}"
  # (g) the ladder on the fast4 recipe; its eager rung is race-fast's eager row
  step ladder 185 200 "$PY" -m bench ladder --preset=fast4 --profile=full \
    --rungs=device,bf16,channels-last,compile,cuda-graphs,triton --results_dir="$R" "${TRAIN_ARGS[@]}"
  # (h) the pipeline bench
  step pipeline 35 45 "$PY" -m bench pipeline-bench --results-dir="$R" "${PIPE_ARGS[@]}"
  # (i) what is left: more seeds of fast4 (seeds 100...), for the share that reaches 90% and its interval; each row
  # is written as its run ends, so the limit's SIGINT costs only the run in progress
  step seeds 20 "$(left)" "$PY" -m bench race --preset=fast4 --profile=full --runs="${GPU_CHECK_SEEDS:-25}" \
    --variants=fast --seed=100 --results_dir="$R" "${TRAIN_ARGS[@]}"
fi

elapsed=$(( $(date +%s) - start ))
{ echo "=================== gpu-check $PHASE summary (${elapsed} s) ==================="
  cat "$W/device.txt" "$W/notes.txt" "$W/steps.txt"
  for f in "$W"/*.log; do
    [ -f "$f" ] || continue
    name=$(basename "$f" .log)
    echo "--- $name"
    if [ "$name" = tests ]; then
      grep -E "^(FAILED|ERROR) |^=+ .*(passed|failed|error|skipped|deselected|interrupted).* =+$|KeyboardInterrupt" "$f" | tail -40
      continue
    fi
    [ "$name" = race-fast ] && grep -E "^(---|epoch )" "$f" | head -20  # (a)'s epoch log, as printed
    grep -E "^\||^device:|^step-bench|^compile warm-up|: unavailable|^(device|dali|dataloader): |skipped|reached|did not reach|rows? appended|terminated|interrupted|[Ee]rror" "$f" | head -40
    # whether CUDA graphs captured, and what compiled again or broke a graph (TORCH_LOGS)
    grep -E "\[__(cudagraphs|recompiles|graph_breaks)\]|skipping cudagraphs" "$f" | sed -E 's/^.*\] \[__/[__/' \
      | cut -c1-200 | sort | uniq -c | sort -rn | head -12
  done
} > "$W/summary.txt"

tarball="$OUT/gpu-check-$PHASE.tar.gz"
made=""
for pass in "*.png" "*.png trace.json" "*.png trace.json *.npy *.log"; do  # smaller each time, until it fits
  read -r -a pats <<< "$pass"
  ex=(); for p in "${pats[@]}"; do ex+=(--exclude="$p"); done
  if [ -n "$made" ]; then echo "gpu-check: the tarball was over $MAX_TAR bytes; left out: ${pass}" >> "$W/summary.txt"; fi
  if ! tar "${ex[@]}" -czf "$tarball" -C "$OUT" "gpu-check-$PHASE"; then made=""; break; fi
  made=$(stat -c %s "$tarball")
  [ "$made" -le "$MAX_TAR" ] && break
done
if [ -n "$made" ] && [ "$made" -le "$MAX_TAR" ]; then
  echo "results: $tarball ($made bytes; scripts/import_runs.py brings all of it into results/)"
  cat "$W/summary.txt"
  rm -rf "$W"
else
  rm -f "$tarball"
  echo "gpu-check: tar failed or stayed over $MAX_TAR bytes; the results stay in $W"
  cat "$W/summary.txt"
  exit 1
fi
