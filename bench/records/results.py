"""The one results writer: atomic CSV appends and rewrites, the columns of every CSV, and the checks on a results
folder. (The environment stamp a row carries is taken by bench/core/machine.py.)"""
from __future__ import annotations

import csv
import fcntl
import glob
import io
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable



ENV_COLUMNS = ("git_commit", "device", "device_type", "device_count", "device_facts", "torch_version",
               "triton_version")  # environment()
RUN_COLUMNS = (
    "run_id", "timestamp", *ENV_COLUMNS, "world_size", "preset", "variant", "profile", "seed", "status", "epochs_run",
    "target_acc", "target_epoch", "time_to_target_s", "train_time_s", "eval_time_s", "warmup_s",
    "wall_time_s", "data_wait_s", "final_test_acc", "best_test_acc", "images_per_s",
    "diverged_epoch", "diverged_step", "diverged_reason", "pipeline", "precision", "channels_last", "compile",
    "norm_kernel", "train_images", "test_images", "data_fingerprint", "config_json",
    "label", "variant_settings",  # the variant's name as read then, and the settings it stood for (records/labels.py)
)
EPOCH_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "epoch_time_s",
                 "train_time_s", "eval_time_s",
                 "test_acc_tta_none", "test_acc_tta_flip")  # what a cheaper TTA would have scored, same passes


def _file_mode() -> int:
    """What open() would give a new file under the current umask (mkstemp always makes 0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


STALE_TMP_S = 60.0  # a temporary file this old was left by a killed writer (a live write takes milliseconds)


def remove_stale_temporaries(path: Path, now: float | None = None) -> list[Path]:
    """Delete `.<name>.*.tmp` beside `path` older than STALE_TMP_S: the litter of writes killed mid-way."""
    now = time.time() if now is None else now
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            if now - tmp.stat().st_mtime > STALE_TMP_S:
                tmp.unlink()
                removed.append(tmp)
        except OSError:  # another writer removed or replaced it first
            pass
    return removed


def atomic_write(path: Path, text: str | bytes) -> None:
    """Write to a temporary file in the same folder, fsync, rename: readers see old or new, never half.
    A symlink is written through (its target replaced), so a link to a shared file stays a link."""
    path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, _file_mode())
        with (os.fdopen(fd, "wb") if isinstance(text, bytes) else os.fdopen(fd, "w", newline="")) as f:
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

    The old text is kept as it is and the row added after it, so a malformed old line (check_csv names it)
    never costs the new row. Columns the file lacks (an older schema) are added, with empty cells in the
    older rows.
    """
    path = Path(os.path.realpath(path))  # a link to a shared runs.csv: lock and write beside the shared file
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(columns)
    unknown = set(row) - set(columns)
    if unknown:
        raise ValueError(f"row has columns the schema lacks: {sorted(unknown)}")
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = ""
        if path.exists():
            with open(path, newline="", encoding="utf-8-sig") as f:  # newline="": line ends in cells stay
                old = f.read()  # -sig: a spreadsheet program's byte-order mark is dropped, the rows kept
        if not old.strip():
            write_csv(path, columns, [row])
            return
        header = next(csv.reader(io.StringIO(old)))
        missing = [c for c in columns if c not in header]
        if missing:
            old = _widen(old, len(header), missing)
            header += missing
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([_fmt(row.get(c)) for c in header])
        atomic_write(path, old + ("" if old.endswith("\n") else "\n") + buf.getvalue())


def _widen(text: str, width: int, missing: list[str]) -> str:
    """The CSV text with `missing` columns appended (empty cells); lines of another width are kept as they are."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    for i, rec in enumerate(csv.reader(io.StringIO(text))):
        if i == 0:
            rec = rec + missing
        elif len(rec) == width:
            rec = rec + [""] * len(missing)
        if rec:
            out.writerow(rec)
    return buf.getvalue()


def keep_unrecorded_row(run_dir: Path, row: dict[str, Any]) -> Path | None:
    """Best effort, once runs.csv could not take the row: the row as a one-row CSV in the run's folder (marks it
    unrecorded). None when that cannot be written either (the disk is still full)."""
    path = Path(run_dir) / "UNRECORDED-row.csv"
    try:
        write_csv(path, RUN_COLUMNS, [row])
        return path
    except OSError:
        return None


class ResultsError(ValueError):
    """The results folder or a CSV in it cannot take a row; the message names the path and the fix."""


def check_results_dir(results_dir: str | Path) -> Path:
    """Before any training: the folder exists (created here if not) and a file can be written in it and runs/."""
    root = Path(results_dir)
    for folder in (root, root / "runs"):
        if folder.exists() and not folder.is_dir():
            raise ResultsError(f"results folder {folder} is a file, not a folder: pass --results_dir=<a folder>")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe.", suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise ResultsError(f"cannot write in results folder {folder} ({e.strerror or e}): make it writable "
                               f"or pass --results_dir=<a writable folder>") from None
    return root


def check_csv(path: str | Path, known: Iterable[str] = ()) -> None:
    """Before any training: the header names only `known` columns (when given; a renamed or foreign header would
    split the schema), and every line has one field per header column (names file and line)."""
    path = Path(path)
    lock = path.with_name(path.name + ".lock")
    if lock.is_dir():
        raise ResultsError(f"{lock} is a folder where the results lock file should be: move it away")
    if not path.exists():
        return
    if path.is_dir():
        raise ResultsError(f"{path} is a folder where the results CSV should be: move it away")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            foreign = [c for c in header or [] if c not in known] if known else []
            if foreign:
                raise ResultsError(f"{path} has header columns this harness never writes ({', '.join(foreign[:3])}"
                                   f"{', ...' if len(foreign) > 3 else ''}): restore its header, or move the file "
                                   f"away and start a new one")
            for rec in reader:
                if rec and len(rec) != len(header):
                    raise ResultsError(f"{path} line {reader.line_num}: {len(rec)} fields where the header has "
                                       f"{len(header)}; fix or delete that line, then run again")
    except (csv.Error, UnicodeDecodeError) as e:
        raise ResultsError(f"{path} is not readable CSV ({e}); fix or move the file, then run again") from None
    except OSError as e:
        raise ResultsError(f"cannot read {path} ({e.strerror or e}); fix its permissions or move it") from None
