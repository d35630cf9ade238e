"""The one GPU check script: its refusals, its steps' order, limits and cuts, its tarball, and the importer that
brings the tarball back. A stand-in python logs each command and writes what the real one would."""
import csv
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path; a CUDA device is visible here")
def test_gpu_check_refuses_without_cuda(tmp_path, monkeypatch):
    monkeypatch.delenv("GPU_CHECK_CUDA_STANDIN", raising=False)
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out), sys.executable, "nodata"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3
    assert "no CUDA device" in proc.stderr
    assert not out.exists()  # nothing was run, so nothing was written


# Stands in for python: logs its arguments; the bench commands write a row where the real ones would. FAKE_SLOW names
# a command (its third argument) that writes its row, then sleeps (a step its limit cuts); FAKE_STUBBORN one that
# ignores SIGINT too.
FAKE_PYTHON = r"""#!/usr/bin/env bash
echo "$* commit=$BENCH_GIT_COMMIT" >> "$FAKE_LOG"
if [ "$1" = - ]; then cat > /dev/null; echo "torch 9 FakeGPU cudnn 1"; echo "albumentations: ${FAKE_ALBU:-installed}"; exit 0; fi
dir=""; for a in "$@"; do case "$a" in --results-dir=*|--results_dir=*) dir=${a#*=};; esac; done
kind=$3; [ "$1" = scripts/compile_warmup.py ] && kind=graph-run
[ "$2" = pytest ] && kind=tests
case "$kind" in
  step-bench) printf 'step,compile\nnew,graph\n' > "$dir/step.csv"
              echo "W1203 x.py:1] [0/0] [__cudagraphs] skipping cudagraphs due to mutated inputs (1 instances)";;
  profile) mkdir -p "$dir/profiles/p-$RANDOM"; echo "| step | host ms |";;
  race) mkdir -p "$dir/runs/r1"; printf 'run_id,preset,variant\nr1,fast,fast\n' > "$dir/runs.csv";;
  pipeline-bench) printf 'pipeline,images\ndevice,1\n' > "$dir/pipeline.csv";;
  tests) echo "tests/test_bn_relu.py::test_x[cuda] PASSED"; echo "=== 1 passed in 1.0s ===";;
esac
echo "ran: $*"
if [ "$kind" = "${FAKE_SLOW:-}" ]; then
  # the sleep is killed too: it holds the step's output pipe open, so tee (and the step) would wait it out
  trap 'echo "signal INT" >> "$FAKE_LOG"; kill $!; exit 130' INT; trap 'echo "signal TERM" >> "$FAKE_LOG"; kill $!; exit 143' TERM
  sleep 60 & wait
fi
if [ "$kind" = "${FAKE_STUBBORN:-}" ]; then trap "" INT; sleep 60; fi
exit 0
"""


def fake_check(tmp_path, phase, fake=FAKE_PYTHON, **env):
    """The check with the stand-in python: the orchestration, without a GPU (or a CPU's seconds)."""
    py = tmp_path / "python"
    py.write_text(fake)
    py.chmod(0o755)
    log, out = tmp_path / "calls.log", tmp_path / "out"
    full_env = {"PATH": "/usr/bin:/bin", "FAKE_LOG": str(log), "BENCH_GIT_COMMIT": "abc1234", "GPU_CHECK_UNPACK": "0",
                "CIFAR10_DIR": str(tmp_path), **env}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out), str(py), phase],
                          capture_output=True, text=True, env=full_env, timeout=300)
    return proc, log.read_text().splitlines() if log.exists() else [], out


def untar(out: Path, phase: str) -> dict[str, bytes]:
    with tarfile.open(out / f"gpu-check-{phase}.tar.gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_nodata_phase_runs_its_steps_by_value_tars_one_file_and_prints_the_summary_last(tmp_path):
    proc, calls, out = fake_check(tmp_path, "nodata")
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in out.iterdir()] == ["gpu-check-nodata.tar.gz"]  # the work folder is gone
    files = untar(out, "nodata")
    summary = files["gpu-check-nodata/summary.txt"].decode()
    assert proc.stdout.endswith(summary)  # the summary is the last thing printed
    ran = [c for c in calls if not c.startswith("- ")]
    order = ["-m bench step-bench", "-m pytest", "-m bench kernel-bench", "--compile=default", "--compile=reduce-overhead",
             "--compile=graph --warmup_steps", "compile_warmup.py"]
    assert [next(i for i, c in enumerate(ran) if o in c) for o in order] == list(range(len(order)))
    assert "--compile-modes=off,default,reduce-overhead,graph" in ran[0] and "--batch-sizes=512" in ran[0]
    assert "-v -rA" in ran[1] and "-k cuda" in ran[1]  # names of failures come back; CUDA-only tests
    assert not any("race" in c or "ladder" in c for c in ran)  # no data step in this phase
    assert all(c.endswith("commit=abc1234") for c in calls)  # passed through to every command
    assert "[__cudagraphs] skipping cudagraphs due to mutated inputs" in summary  # the profiles' main answer
    assert "1 passed" in summary and "git commit: abc1234" in summary
    assert "gpu-check-nodata/results/step.csv" in files


def test_a_step_cut_by_its_limit_keeps_its_rows_and_what_no_longer_fits_is_cut_in_one_line(tmp_path):
    """A 33 s data phase, 10 s of it kept for the tarball, 2 s of SIGKILL grace: the races and the ladder need more
    than twice the 21 s in hand and are cut; the pipeline bench (about 35 s, so it starts with 18 s or more in hand:
    4 s of slack for what runs before it) writes its row and is stopped by SIGINT at its 12 s limit; the seeds step
    (about 20 s) is cut, under half of its need being left (at most 9 s)."""
    proc, calls, out = fake_check(tmp_path, "data", FAKE_SLOW="pipeline-bench", GPU_CHECK_BUDGET_S="33",
                                  GPU_CHECK_LIMIT_S="12", GPU_CHECK_KILL_GRACE_S="2")
    assert proc.returncode == 0, proc.stderr
    assert "signal INT" in calls  # Python and pytest unwind on SIGINT and say what finished
    files = untar(out, "data")
    steps = files["gpu-check-data/steps.txt"].decode().splitlines()
    assert [s.split(" ")[0] for s in steps] == ["race-fast", "race-seed", "ladder", "pipeline", "seeds"]
    assert "rc=124" in steps[3] and "stopped by its limit (SIGINT)" in steps[3]
    assert files["gpu-check-data/results/pipeline.csv"].decode().splitlines()[1] == "device,1"
    cut = steps[:3] + steps[4:]
    assert all(" cut: " in s and "of the phase's budget, it needs about" in s for s in cut)


def test_a_step_that_ignores_sigint_is_killed_and_the_tarball_is_still_made(tmp_path):
    proc, _, out = fake_check(tmp_path, "data", FAKE_STUBBORN="race", GPU_CHECK_LIMIT_S="2", FAKE_ALBU="no",
                              GPU_CHECK_KILL_GRACE_S="1")
    assert proc.returncode == 0, proc.stderr
    steps = untar(out, "data")["gpu-check-data/steps.txt"].decode()
    assert "race-fast rc=137" in steps and "killed 1 s after its limit (SIGKILL)" in steps
    assert "pipeline rc=0" in steps
    assert "eager baseline left out: albumentations is not installed" in proc.stdout


def test_an_oversized_tarball_is_made_again_smaller_and_the_summary_says_what_was_left_out(tmp_path):
    # a profile's trace that does not compress, and a PNG: together over the limit set below
    fake = FAKE_PYTHON.replace('mkdir -p "$dir/profiles/p-$RANDOM"',
                               'mkdir -p "$dir/profiles/p"; head -c 300000 /dev/urandom > "$dir/profiles/p/trace.json"; '
                               'head -c 1000 /dev/urandom > "$dir/profiles/p/x.png"')
    proc, _, out = fake_check(tmp_path, "nodata", fake, GPU_CHECK_MAX_TAR_BYTES="200000")
    assert proc.returncode == 0, proc.stderr
    files = untar(out, "nodata")
    assert not any(n.endswith((".png", "trace.json")) for n in files) and "gpu-check-nodata/tests.log" in files
    assert (out / "gpu-check-nodata.tar.gz").stat().st_size <= 200000
    assert "left out: *.png trace.json" in files["gpu-check-nodata/summary.txt"].decode()


@pytest.mark.parametrize("phase, says", [("all", "PHASE=all needs about 660 s"), ("everything", "nodata, data")])
def test_phase_all_and_unknown_phases_are_refused_in_one_line(tmp_path, phase, says):
    proc, calls, out = fake_check(tmp_path, phase)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and says in proc.stderr
    assert calls == [] and not out.exists()


def test_the_data_phase_needs_data_and_says_so_in_one_line(tmp_path):
    proc, calls, _ = fake_check(tmp_path, "data", CIFAR10_DIR="")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "CIFAR10_DIR" in proc.stderr and calls == []


def test_import_brings_back_a_nodata_tarball_rows_profiles_and_notes_and_is_idempotent(tmp_path):
    from bench.records.results import ENV_COLUMNS, write_csv
    check = tmp_path / "gpu-check-nodata"
    res = check / "results"
    row = {"timestamp": "t", **{c: "x" for c in ENV_COLUMNS}, "git_commit": "unknown", "step": "new",
           "compile": "graph", "ms_per_step": "9.4"}
    write_csv(res / "step.csv", list(row), [row])
    write_csv(res / "kernels.csv", ["timestamp", "impl", "git_commit"], [{"timestamp": "t", "impl": "triton",
                                                                          "git_commit": "unknown"}])
    (res / "profiles" / "p1").mkdir(parents=True)
    (res / "profiles" / "p1" / "top_ops.md").write_text("# Profile p1\n")
    for name in ("summary.txt", "steps.txt", "notes.txt", "device.txt", "step-bench.log"):
        (check / name).write_text(name)
    tarball = tmp_path / "gpu-check-nodata.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(check, arcname="gpu-check-nodata")
    dest = tmp_path / "results"
    cmd = [sys.executable, str(ROOT / "scripts" / "import_runs.py"), str(tarball), "--name=h200-nodata",
           f"--results-dir={dest}", "--git-commit=d9ecd36"]
    for _ in range(2):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    with open(dest / "step.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["compile"], r["git_commit"]) for r in rows] == [("graph", "d9ecd36")]  # once, commit set
    assert (dest / "kernels.csv").read_text().count("triton") == 1
    assert (dest / "profiles" / "p1" / "top_ops.md").is_file()
    assert (dest / "imports" / "h200-nodata" / "summary.txt").read_text() == "summary.txt"
    assert (dest / "imports" / "h200-nodata" / "step-bench.log").is_file()
    provenance = (dest / "imports" / "h200-nodata.md").read_text()
    assert "rows appended to step.csv: 1" in provenance and "profiles copied: p1" in provenance


def test_import_refuses_what_holds_nothing_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_runs.py"), str(tmp_path / "empty"),
                           "--name=x", f"--results-dir={tmp_path / 'r'}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "holds no gpu-check folder" in proc.stderr
    assert not (tmp_path / "r").exists()
