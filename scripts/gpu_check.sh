#!/usr/bin/env bash
# One GPU check: kernel tests on CUDA, kernel and pipeline microbenchmarks, the seed-recipe race to 90%
# (eager vs fast). Installs nothing; data from $CIFAR10_DIR. Writes CSVs and logs to OUT, summary last.
# Usage: scripts/gpu_check.sh OUT [PYTHON]     (make gpu-check OUT=... [PYTHON=...])
set -uo pipefail
OUT=${1:?usage: gpu_check.sh OUT [PYTHON]}
PY=${2:-python3}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)"; then
  echo "gpu-check: no CUDA device is visible to $PY (torch.cuda.is_available() is False); nothing was run" >&2
  exit 3
fi
if [ -z "${CIFAR10_DIR:-}" ] || [ ! -d "$CIFAR10_DIR" ]; then
  echo "gpu-check: set CIFAR10_DIR to the cifar-10-batches-bin folder (got '${CIFAR10_DIR:-}')" >&2
  exit 2
fi
export CIFAR10_DIR
start=$(date +%s)
step() {  # step NAME SECONDS CMD...: run with a time limit, log to OUT/NAME.log, remember the exit code
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s) ==="
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "$name rc=$rc $(( $(date +%s) - start ))s" | tee -a "$OUT/steps.txt"
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  "$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
} | tee "$OUT/device.txt"
# The limits add up to 470 s, so the whole check ends within 8 minutes even when a step runs out of time.
step tests 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_bn_relu.py tests/test_model_kernels.py \
  tests/test_augment.py
step kernels 70 "$PY" -m bench kernel-bench --results-dir="$OUT" --dtypes=bf16,fp32 --layouts=channels_last
step pipeline 40 "$PY" -m bench pipeline-bench --results-dir="$OUT"
# fast first: if the eager baseline runs out of time, the optimised row has already landed
step race 210 "$PY" -m bench race --profile=full --runs=1 --variants=fast,eager --results_dir="$OUT"
echo
echo "=================== gpu-check summary ($(( $(date +%s) - start )) s) ==================="
cat "$OUT/device.txt"
cat "$OUT/steps.txt"
grep -E "passed|failed" "$OUT/tests.log" | tail -1
for f in kernels pipeline race; do echo "--- $f"; grep -E "^\||^device:" "$OUT/$f.log" | head -40; done
