#!/usr/bin/env bash
# The GPU check rehearsed end to end on a CPU: both phases of scripts/gpu_check.sh with the CUDA probe stood in
# (GPU_CHECK_CUDA_STANDIN=1: CUDA-only step modes run through their CPU stand-ins, bench/core/step.py) and every step at
# tiny sizes, then scripts/gpu_check_verify.py: every step ran its real command and wrote its output, each tarball
# is under 12 MiB, and scripts/import_runs.py brings all of it back. Exit 0 only if all of that holds.
# Figures written here are this CPU's at toy sizes (the rows say so): a rehearsal measures nothing about a GPU.
# Usage: scripts/gpu_check_rehearsal.sh OUT [PYTHON]     (make gpu-check-rehearsal OUT=...; .ci/run runs it)
set -uo pipefail
OUT=${1:?usage: gpu_check_rehearsal.sh OUT [PYTHON]}
PY=${2:-python3}
cd "$(dirname "$0")/.."
data=${CIFAR10_DIR:-../shared/data/cifar-10-batches-bin}
if [ ! -d "$data" ]; then
  echo "gpu-check rehearsal: its data phase needs CIFAR-10: set CIFAR10_DIR to a cifar-10-batches-bin folder" \
       "(got '$data')" >&2
  exit 2
fi
CIFAR10_DIR=$(cd "$data" && pwd)
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT";; esac
rm -rf "$OUT"
mkdir -p "$OUT"
export CIFAR10_DIR GPU_CHECK_CUDA_STANDIN=1 GPU_CHECK_UNPACK=0
# tiny sizes: one batch size for the step bench, the profiles and the compile=graph run, so Inductor compiles the
# fast step once and its cache serves the rest (a cold compile of it takes about two minutes on a 2-core CPU)
export GPU_CHECK_BATCH=8 GPU_CHECK_STEP_STEPS=1 GPU_CHECK_PROFILE_STEPS=1 GPU_CHECK_WARMUP_IMAGES=16 \
  GPU_CHECK_WARMUP_TEST=16
# the races and the ladder: 16 training images (two steps), 16 test images, one epoch; no Muon (its Newton-Schulz
# takes about 3 s a step here, and 40 s in bf16 on a CPU without native bf16, whatever the batch)
export GPU_CHECK_TRAIN_ARGS="--train_subset=16 --test_subset=16 --batch_size=8 --eval_batch_size=16 --epochs=1 --muon_lr=0"
export GPU_CHECK_PIPELINE_ARGS="--train-subset=512 --time-cap-s=2 --rounds=1"
export BENCH_KERNEL_BATCH=2  # the kernel bench's images per shape (its CPU stand-in runs Triton interpreted)
export GPU_CHECK_SEEDS=2 GPU_CHECK_BUDGET_S=1500 GPU_CHECK_LIMIT_S=900  # a CPU is slower than the GPU limits assume; nothing is cut
t0=$(date +%s)
for phase in nodata data; do
  s=$(date +%s)
  bash scripts/gpu_check.sh "$OUT" "$PY" "$phase" > "$OUT/$phase.out" 2>&1
  echo "rehearsal: phase $phase rc=$? in $(( $(date +%s) - s )) s (its output: $OUT/$phase.out)"
done
"$PY" scripts/gpu_check_verify.py "$OUT"
rc=$?
echo "rehearsal: $(( $(date +%s) - t0 )) s in all"
exit $rc
