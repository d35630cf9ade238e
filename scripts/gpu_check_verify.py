"""Check what a rehearsal of `make gpu-check` left: every step ran and wrote its output, each tarball fits what a
device call brings back, and scripts/import_runs.py brings all of it into a results folder.

Prints one line per failure and exits 1 if there is any (0 otherwise). The rehearsal (scripts/gpu_check_rehearsal.sh)
runs it after both phases; it also reads a real GPU machine's tarballs (`--phases=nodata` for one of them).
Usage: python scripts/gpu_check_verify.py OUT [--phases=nodata,data] [--max-bytes=12582912]
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.core.recipes import base_preset  # noqa: E402  (rows name recipes as they were called; this reads today's)
# each phase's steps, as scripts/gpu_check.sh names them, in its order
STEPS = {"nodata": ("step-bench", "tests", "kernels", "profile-default", "profile-reduce-overhead", "profile-graph",
                    "graph-run"),
         "data": ("race-fast", "race-seed", "ladder", "pipeline", "seeds")}
STEP_MODES = ("off", "default", "reduce-overhead", "graph")  # step-bench's rows of the new step
PROFILE_MODES = ("default", "reduce-overhead", "graph")
TABLES = ("kernels.csv", "step.csv", "pipeline.csv")


def rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_phase(phase: str, folder: Path, cuda: bool) -> list[str]:
    """What one untarred phase must hold: each step's rc=0 line and log, and the files its steps write."""
    bad = []
    steps = (folder / "steps.txt").read_text() if (folder / "steps.txt").is_file() else ""
    for name in STEPS[phase]:
        if f"{name} rc=0 " not in steps:
            line = next((s for s in steps.splitlines() if s.startswith(f"{name} ")), "no line in steps.txt")
            bad.append(f"{phase}: step {name} did not finish cleanly: {line}")
        elif not (folder / f"{name}.log").is_file():
            bad.append(f"{phase}: step {name} left no {name}.log")
    if not (folder / "summary.txt").is_file():
        bad.append(f"{phase}: no summary.txt")
    res = folder / "results"
    if phase == "nodata":
        step = rows(res / "step.csv")
        missing = [m for m in STEP_MODES if not any(r["step"] == "new" and r["compile"] == m for r in step)]
        if missing or not any(r["step"] == "plain" for r in step):
            bad.append(f"nodata: step.csv lacks rows of the new step in {', '.join(missing) or '-'} (or the plain row)")
        if not rows(res / "kernels.csv"):
            bad.append("nodata: kernel-bench wrote no rows to kernels.csv")
        profiles = sorted((res / "profiles").glob("*/top_ops.md"))
        seen = {m for m in PROFILE_MODES for p in profiles if f"compile {m}," in p.read_text()}
        if seen != set(PROFILE_MODES) or any(not (p.parent / "steps.csv").is_file() for p in profiles):
            bad.append(f"nodata: profiles of {', '.join(sorted(set(PROFILE_MODES) - seen)) or 'every mode'} "
                       f"missing or without steps.csv")
        tests = (folder / "tests.log").read_text() if (folder / "tests.log").is_file() else ""
        if "short test summary info" not in tests or "::" not in tests:
            bad.append("nodata: tests.log has no per-test names and summary (pytest -v -rA)")
        if "compile warm-up" not in ((folder / "graph-run.log").read_text() if (folder / "graph-run.log").is_file()
                                     else ""):
            bad.append("nodata: the compile=graph run printed no result line")
    else:
        runs = rows(res / "runs.csv")
        have = {(base_preset(r["preset"]), r["variant"]) for r in runs}
        rungs = ["device", "bf16", "channels-last", "compile"] + (["cuda-graphs", "triton"] if cuda else [])
        want = [("fast4", "fast"), ("fast4", "eager"), ("seed", "fast")] + [("fast4", r) for r in rungs]
        missing = [f"{p}/{v}" for p, v in want if (p, v) not in have]
        if missing:
            bad.append(f"data: runs.csv lacks rows of {', '.join(missing)}")
        for r in runs:
            if not (res / "runs" / r["run_id"] / "epochs.csv").is_file():
                bad.append(f"data: run {r['run_id']} has no runs/{r['run_id']}/epochs.csv")
        if not rows(res / "pipeline.csv"):
            bad.append("data: pipeline-bench wrote no rows to pipeline.csv")
        seeds = [r for r in runs if base_preset(r["preset"]) == "fast4" and r["variant"] == "fast"]
        if not any(int(r["seed"]) >= 100 for r in seeds):
            bad.append("data: the seeds step wrote no row of fast4 with seed >= 100")
    return bad


def check_import(tarballs: dict[str, Path], untarred: dict[str, Path], tmp: Path) -> list[str]:
    """scripts/import_runs.py on each tarball into one fresh results folder: everything comes back."""
    bad = []
    dest = tmp / "imported"
    for phase, tarball in tarballs.items():
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_runs.py"), str(tarball),
                               f"--name=rehearsal-{phase}", f"--results-dir={dest}"], capture_output=True, text=True)
        if proc.returncode != 0:
            bad.append(f"import of {tarball.name} refused (rc {proc.returncode}): {proc.stderr.strip()}")
            continue
        for name in ("summary.txt", "steps.txt", "notes.txt", "device.txt"):
            if not (dest / "imports" / f"rehearsal-{phase}" / name).is_file():
                bad.append(f"import of {tarball.name}: the check's {name} was not brought back")
    res = {phase: f / "results" for phase, f in untarred.items()}
    for table in ("runs.csv",) + TABLES:
        want = sum(len(rows(r / table)) for r in res.values())
        got = len(rows(dest / table))
        if got != want:
            bad.append(f"import: {table} has {got} rows, the tarballs {want}")
    for sub in ("runs", "profiles"):
        want = {p.name for r in res.values() for p in (r / sub).glob("*") if p.is_dir()}
        got = {p.name for p in (dest / sub).glob("*") if p.is_dir()}
        if want - got:
            bad.append(f"import: {sub}/ lacks {', '.join(sorted(want - got))}")
    return bad


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--phases", default="nodata,data")
    p.add_argument("--max-bytes", type=int, default=12 * 2**20)
    p.add_argument("--cuda", action="store_true", help="a GPU machine's tarballs: the CUDA-only ladder rungs too")
    args = p.parse_args(argv)
    bad: list[str] = []
    tarballs, untarred = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for phase in [x for x in args.phases.split(",") if x]:
            tarball = args.out / f"gpu-check-{phase}.tar.gz"
            if not tarball.is_file():
                bad.append(f"{phase}: no {tarball} (the check made no tarball)")
                continue
            size = tarball.stat().st_size
            print(f"{tarball.name}: {size:,} bytes")
            if size > args.max_bytes:
                bad.append(f"{phase}: {tarball.name} is {size:,} bytes, over {args.max_bytes:,}")
            with tarfile.open(tarball) as tar:
                names = tar.getnames()
                tar.extractall(Path(tmp) / phase, filter="data")
            if any(n.endswith(".png") for n in names):
                bad.append(f"{phase}: the tarball carries PNGs (a report rebuilds them)")
            tarballs[phase] = tarball
            untarred[phase] = Path(tmp) / phase / f"gpu-check-{phase}"
            bad += check_phase(phase, untarred[phase], args.cuda)
        if tarballs:
            bad += check_import(tarballs, untarred, Path(tmp))
    for line in bad:
        print(f"rehearsal: FAILED: {line}")
    if not bad:
        print(f"rehearsal: every step ran and wrote its output; tarballs fit; the import brought all of it back")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
