"""Every command and Makefile target a user is told about, run the way a user types it, on tiny real data.

Each runs in a fresh process from a scratch folder (so `results/` is the scratch one), through `make -f` where a
target exists. A traceback, or an exit code other than the one promised, fails. A command or target added
without a line here fails `test_every_command_and_target_is_covered`.
"""
from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import _parser

ROOT = Path(__file__).resolve().parent.parent
TINY = "--train_subset=32 --test_subset=32 --batch_size=32 --eval_batch_size=32 --epochs=1"  # one step, one batch

# (name, argv after `make -f Makefile` or `python -m bench`, promised exit code, text the output must hold).
# The order matters: leaderboard and report read the rows the earlier runs wrote.
CALLS = [
    ("make bench", ["make", "bench", f"ARGS={TINY}"], 0, "speedup vs eager"),
    ("make bench LADDER=1", ["make", "bench", "LADDER=1", f"ARGS={TINY} --rungs=device"], 0, "device |"),
    ("make ladder", ["make", "ladder", f"ARGS={TINY} --rungs=device --dry-run"], 0, "checks passed: ladder"),
    ("bench run", ["bench", "run", "--preset=fast4", "--variant=fast", *TINY.split()], 0, "row appended"),
    ("bench show-config", ["bench", "show-config", "--preset=fast4", "--epochs=3"], 0, '"epochs": 3'),
    ("make leaderboard", ["make", "leaderboard"], 0, "leaderboard"),
    ("make report", ["make", "report", "RUN={run}"], 0, "report"),
    ("make report (no RUN)", ["make", "report"], 2, "usage: make report RUN="),
    ("make lr-find", ["make", "lr-find", f"ARGS={TINY} --num-iter=3 --precision=fp32"], 0, "lr_find.csv"),
    ("make profile", ["make", "profile", "ARGS=--steps=1 --warmup=0 --batch_size=8"], 0, "profiles"),
    ("make bench-step", ["make", "bench-step", "ARGS=--batch-sizes=8 --steps=1 --compile-modes=off"], 0, "step.csv"),
    ("make bench-pipeline", ["make", "bench-pipeline",
                             "ARGS=--train-subset=512 --rounds=1 --time-cap-s=2 --pipelines=device"], 0, "pipeline.csv"),
    ("make bench-kernels", ["make", "bench-kernels"], 0, "needs a CUDA device"),
    ("make kernels-static", ["make", "kernels-static",
                             "ARGS=--targets=sm_90 --dtypes=bf16 --layouts=channels_last --passes=train-fwd"], 0,
     "kernels_static.csv"),
    ("make choose-fast", ["make", "choose-fast", "ARGS=--steps=1 --batch-size=8 --compile-modes=off"], 0,
     "variants.csv"),
    ("make gpu-check (no GPU)", ["make", "gpu-check", "PHASE=nodata", "OUT={tmp}/out"], 2, "no CUDA device"),
]
# targets that are not a user's command: the suite itself, setup and cleaning
NOT_COMMANDS = {"test", "test-all", "mutants", "setup", "clean-venv", "gpu-check-rehearsal"}


def makefile_commands() -> dict[str, set[str]]:
    """Each target of the Makefile's .PHONY line -> the `python -m bench` commands its recipe runs."""
    text = (ROOT / "Makefile").read_text()
    targets = re.search(r"^\.PHONY:(.*)$", text, re.M).group(1).split()
    out = {}
    for target in targets:
        block = re.search(rf"^{re.escape(target)}:.*\n((?:(?:\t|#|ifeq|ifneq|else|endif).*\n)*)", text, re.M)
        assert block, f"no recipe for .PHONY target {target}"
        out[target] = set(re.findall(r"(?:-m bench|\$\(LAUNCH\)) ([a-z-]+)", block.group(1)))
    return out


def bench_commands() -> set[str]:
    sub = next(a for a in _parser()._actions if a.dest == "command")
    return set(sub.choices)


def test_every_command_and_target_is_covered():
    targets = makefile_commands()
    called = {argv[1] for _, argv, _, _ in CALLS}
    assert set(targets) - NOT_COMMANDS - called == set(), "a Makefile target has no line in CALLS"
    through_make = set().union(*(targets[t] for t in called if t in targets))
    assert bench_commands() - through_make - called == set(), "a bench command is run neither directly nor by make"
    assert "race" in through_make and "kernel-static" in through_make  # the parser above reads what it should


def run_call(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    if argv[0] == "make":
        cmd = ["make", "-s", "-f", str(ROOT / "Makefile"), f"PYTHON={sys.executable}", *argv[1:]]
    else:
        cmd = [sys.executable, "-m", *argv]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.long
def test_every_command_as_typed(tmp_path, cifar_dir):
    env = {**os.environ, "CIFAR10_DIR": str(cifar_dir), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "PYTHONPATH": str(ROOT)}
    env.pop("TRITON_INTERPRET", None)  # as a user's shell has it
    failures = []
    for name, argv, code, needle in CALLS:
        if "RUN={run}" in argv:
            with open(tmp_path / "results" / "runs.csv", newline="") as f:
                run_id = list(csv.DictReader(f))[-1]["run_id"]
            argv = [a.replace("{run}", run_id) for a in argv]
        argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
        t0 = time.perf_counter()
        done = run_call(argv, ROOT if argv[1] == "gpu-check" else tmp_path, env)
        print(f"{name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)  # shown by -s: what the test costs
        text = done.stdout + done.stderr
        if done.returncode != code or "Traceback" in text or needle not in text:
            failures.append(f"{name}: exit {done.returncode} (promised {code}), {needle!r} "
                            f"{'found' if needle in text else 'missing'}\n{text[-1500:]}")
    assert not failures, "\n\n".join(failures)
