"""The one results writer: atomic CSV appends, per-epoch logs, and the environment stamp of a row."""
from __future__ import annotations

import csv
import fcntl
import io
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable

import torch

ENV_COLUMNS = ("git_commit", "device", "device_type", "device_count", "torch_version", "triton_version")  # environment()
RUN_COLUMNS = (
    "run_id", "timestamp", *ENV_COLUMNS, "world_size", "preset", "variant", "profile", "seed", "status", "epochs_run",
    "target_acc", "target_epoch", "time_to_target_s", "train_time_s", "eval_time_s", "warmup_s",
    "wall_time_s", "data_wait_s", "final_test_acc", "best_test_acc", "images_per_s",
    "diverged_epoch", "diverged_step", "pipeline", "precision", "channels_last", "compile",
    "norm_kernel", "train_images", "test_images", "config_json",
)
EPOCH_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "epoch_time_s",
                 "train_time_s", "eval_time_s")


def _file_mode() -> int:
    """What open() would give a new file under the current umask (mkstemp always makes 0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, fsync, rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, _file_mode())
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_csv(path: Path, columns: Iterable[str], rows: Iterable[dict[str, Any]]) -> None:
    """Replace `path` atomically with a CSV of `rows` under `columns`."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(v) for k, v in row.items()})
    atomic_write(Path(path), buf.getvalue())


def append_row(path: Path, row: dict[str, Any], columns: Iterable[str] = RUN_COLUMNS) -> None:
    """Append one row atomically; concurrent writers are serialised by a lock file so both rows land.

    Columns the file lacks (an older schema) are added, with empty cells in the older rows.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(columns)
    unknown = set(row) - set(columns)
    if unknown:
        raise ValueError(f"row has columns the schema lacks: {sorted(unknown)}")
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows: list[dict[str, str]] = []
        if path.exists() and path.stat().st_size:
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                old = list(reader.fieldnames or [])
                rows = list(reader)
            columns = old + [c for c in columns if c not in old]
        rows.append({k: _fmt(v) for k, v in row.items()})
        write_csv(path, columns, rows)


def git_commit(root: Path | None = None) -> str:
    """Short commit of the working tree, '-dirty' when tracked files outside results/ differ from it (rows and
    reports that runs append do not change the code that ran). Without .git (a copy of the tree, as GPU machines
    get): $BENCH_GIT_COMMIT as given by whoever made the copy, else 'unknown' (commit_note says so)."""
    root = root or Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():  # else git would answer for whatever repository encloses the copy
        return os.environ.get("BENCH_GIT_COMMIT", "").strip() or "unknown"
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results"], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("BENCH_GIT_COMMIT", "").strip() or "unknown"


def commit_note(commit: str) -> str:
    """What a summary line adds when the code that ran cannot be named ('' when it can)."""
    if commit != "unknown":
        return ""
    return "git commit unknown (no .git here): set BENCH_GIT_COMMIT=<the commit this copy came from>"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """'NVIDIA H100 80GB HBM3' on CUDA; the CPU model and the cores torch uses otherwise."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({torch.get_num_threads()} threads)"


def triton_version() -> str:
    try:
        import triton
        return triton.__version__
    except ImportError:
        return ""


def environment(device: torch.device) -> dict[str, Any]:
    return {"git_commit": git_commit(), "device": device_name(device), "device_type": device.type,
            "device_count": torch.cuda.device_count() if device.type == "cuda" else 1,
            "torch_version": torch.__version__, "triton_version": triton_version()}
