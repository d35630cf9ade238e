"""The one GPU check script: on a machine without CUDA it says so, runs nothing and exits non-zero."""
import subprocess
import tarfile
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path; a CUDA device is visible here")
def test_gpu_check_refuses_without_cuda(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out), sys.executable],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3
    assert "no CUDA device" in proc.stderr
    assert not any(out.iterdir())  # nothing was run, so nothing was written


def test_kernel_bench_without_cuda_writes_nothing(tmp_path, capsys):
    from bench.kernel_bench import main
    if torch.cuda.is_available():
        pytest.skip("checks the no-GPU path; a CUDA device is visible here")
    assert main(str(tmp_path)) == 0
    assert "needs a CUDA device" in capsys.readouterr().out and not (tmp_path / "kernels.csv").exists()


FAKE_PYTHON = """#!/usr/bin/env bash
echo "$* commit=$BENCH_GIT_COMMIT" >> "$FAKE_LOG"
case "$*" in
  "-c import albumentations") exit "${FAKE_ALBU_RC:-0}";;
  *nvidia.dali*) exit 1;;
  "-c "*) echo "fake probe"; exit 0;;
  "-m bench step-bench --help") exit 1;;
  *pipeline-bench*) sleep "${FAKE_PIPELINE_SLEEP:-0}"; echo "device: 1 img/s";;
  *) echo "ran: $*";;
esac
"""


def fake_check(tmp_path, phase, **env):
    """The check with a stand-in python that logs each command: the orchestration, without a GPU."""
    py = tmp_path / "python"
    py.write_text(FAKE_PYTHON)
    py.chmod(0o755)
    log, out = tmp_path / "calls.log", tmp_path / "out"
    full_env = {"PATH": "/usr/bin:/bin", "FAKE_LOG": str(log), "BENCH_GIT_COMMIT": "abc1234", "GPU_CHECK_UNPACK": "0",
                "CIFAR10_DIR": str(tmp_path), **env}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out), str(py), phase],
                          capture_output=True, text=True, env=full_env, timeout=300)
    return proc, log.read_text().splitlines() if log.exists() else [], out


def test_nodata_phase_runs_its_steps_tars_one_file_and_prints_the_summary_last(tmp_path):
    proc, calls, out = fake_check(tmp_path, "nodata")
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in out.iterdir()] == ["gpu-check-nodata.tar.gz"]
    with tarfile.open(out / "gpu-check-nodata.tar.gz") as tar:
        names = tar.getnames()
        summary = tar.extractfile("gpu-check-nodata/summary.txt").read().decode()
    assert {"gpu-check-nodata/steps.txt", "gpu-check-nodata/kernels.log"} <= set(names)
    assert proc.stdout.endswith(summary)  # the summary is the last thing printed
    assert "step-bench skipped" in summary and "dali: unavailable" in summary and "git commit: abc1234" in summary
    ran = [c for c in calls if c.startswith(("-m", "scripts/"))]
    assert any("pytest" in c and "tests/test_bn_relu.py" in c for c in ran)
    assert any("kernel-bench" in c for c in ran) and any("compile_warmup.py" in c for c in ran)
    assert not any("race" in c or "ladder" in c for c in ran)  # no data step in this phase
    assert all(c.endswith("commit=abc1234") for c in calls)  # passed through to every command


def test_data_phase_limits_each_step_and_skips_eager_without_albumentations(tmp_path):
    proc, calls, out = fake_check(tmp_path, "data", FAKE_ALBU_RC="1", FAKE_PIPELINE_SLEEP="60", DATA_BUDGET_S="20")
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(out / "gpu-check-data.tar.gz") as tar:
        steps = tar.extractfile("gpu-check-data/steps.txt").read().decode()
    assert "pipeline rc=124" in steps and "stopped by its limit" in steps  # its 60 s sleep cut by the budget
    assert "ladder skipped: the phase's budget is spent" in steps
    assert "leaderboard rc=0" in steps  # the leaderboard keeps its own reserve
    assert "eager skipped: albumentations is not installed" in proc.stdout
    assert not any("--variant=eager" in c for c in calls)


def test_an_unknown_phase_is_refused_in_one_line(tmp_path):
    proc, _, out = fake_check(tmp_path, "everything")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "nodata, data, all" in proc.stderr
