"""The tracked tree travels with a data part to a GPU machine: a device call carries 64 MiB in all, and CIFAR-10 is
split into parts of up to about 46 MiB, so the tracked files must stay under 8 MB. A run's report PNGs (about 1.2 MB
a run) are not tracked: `make report RUN=<run_id>` rebuilds them from the run's epochs.csv and predictions."""
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIMIT_BYTES = 8_000_000


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (a copy of the tree, e.g. on a GPU machine): nothing is tracked here")
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_the_tracked_tree_is_small_enough_to_travel_with_a_data_part():
    sizes = {p: p.stat().st_size for p in tracked_files() if p.is_file()}
    total = sum(sizes.values())
    largest = sorted(sizes, key=sizes.get, reverse=True)[:5]
    assert total < LIMIT_BYTES, (f"tracked files: {total:,} bytes, over {LIMIT_BYTES:,}; largest: "
                                 + ", ".join(f"{p.relative_to(ROOT)} ({sizes[p]:,})" for p in largest))


def test_no_run_report_png_is_tracked():
    pngs = [p.relative_to(ROOT).as_posix() for p in tracked_files() if p.suffix == ".png" and "runs" in p.parts]
    assert pngs == [], f"{len(pngs)} run report PNGs tracked (a report rebuilds them): {pngs[:3]}"
