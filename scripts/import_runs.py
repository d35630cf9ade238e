"""Bring what a GPU machine's `make gpu-check` wrote (or any results folder made elsewhere) into results/.

SRC is a gpu-check tarball (`gpu-check-nodata.tar.gz`, `gpu-check-data.tar.gz`), the folder it untars to, or a
results folder. Brought in: runs.csv rows and runs/<id>/ folders; kernels.csv, step.csv and pipeline.csv rows;
profiles/<id>/ folders; and the check's notes (device.txt, notes.txt, steps.txt, summary.txt, each step's log),
copied to results/imports/<name>/. Rows are appended through the one results writer (locked, atomic); a run_id, or
for the other CSVs a row equal to one present, is left alone, so importing twice changes nothing. Every runs/<id>/
folder is copied, those without a row too (the leaderboard lists them apart). A copy of the tree without .git
stamps rows `git_commit=unknown`: --git-commit names the commit the copy came from, and the provenance file says
that it was supplied afterwards. PNGs are not carried by the check: `make report RUN=<id>` rebuilds a run's.
Usage: python scripts/import_runs.py SRC --name=h200-2026-11-28 [--git-commit=d9ecd36] [--rename-preset=fast=fast8]
       [--results-dir=results] [--note="..."]
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tarfile
import tempfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.records.results import RUN_COLUMNS, append_row, atomic_write  # noqa: E402

TABLES = ("kernels.csv", "step.csv", "pipeline.csv")  # tool rows: imported row by row, equal rows skipped
NOTES = ("device.txt", "notes.txt", "steps.txt", "summary.txt")  # the check's own record, beside its logs


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def results_and_check(src: Path) -> tuple[Path, Path | None]:
    """(results folder, check folder or None) inside an untarred SRC: a gpu-check-<phase>/ folder holds results/."""
    if (src / "results").is_dir() and any((src / n).is_file() for n in NOTES):
        return src / "results", src
    inner = sorted(p for p in src.glob("gpu-check-*") if p.is_dir())
    if len(inner) == 1 and (inner[0] / "results").is_dir():
        return inner[0] / "results", inner[0]
    return src, None


def has_anything(results: Path, check: Path | None) -> bool:
    return (check is not None or (results / "runs.csv").is_file() or any((results / t).is_file() for t in TABLES)
            or (results / "profiles").is_dir())


def _import_runs(src: Path, dest: Path, git_commit: str, rename: dict[str, str]) -> tuple[list[str], list[str], list[dict]]:
    rows = _rows(src / "runs.csv")
    have = {r.get("run_id") for r in _rows(dest / "runs.csv")}
    new = []
    for row in rows:
        if row["run_id"] in have:
            continue
        if git_commit and row.get("git_commit") in ("", "unknown"):
            row["git_commit"] = git_commit
        if row.get("preset") in rename:
            row["preset"] = rename[row["preset"]]
            cfg = json.loads(row["config_json"])
            cfg["preset"] = row["preset"]
            row["config_json"] = json.dumps(cfg, sort_keys=True)
        columns = list(RUN_COLUMNS) + [c for c in row if c not in RUN_COLUMNS]
        append_row(dest / "runs.csv", {k: v for k, v in row.items() if v != ""}, columns)
        new.append(row["run_id"])
    copied = []
    for run in sorted(p for p in (src / "runs").glob("*") if p.is_dir()):
        if not (dest / "runs" / run.name).exists():
            shutil.copytree(run, dest / "runs" / run.name)
            copied.append(run.name)
    return new, copied, rows


def _import_table(src: Path, dest: Path, name: str, git_commit: str) -> int:
    """Append src's rows of one tool CSV that dest lacks (a row equal to one present is the same measurement)."""
    rows = _rows(src / name)
    if not rows:
        return 0
    def key(r: dict) -> tuple:
        return tuple(sorted((k, v) for k, v in r.items() if k != "git_commit" and v not in ("", None)))
    have = {key(r) for r in _rows(dest / name)}
    columns = list(rows[0].keys())
    added = 0
    for row in rows:
        if key(row) in have:
            continue
        if git_commit and row.get("git_commit") in ("", "unknown"):
            row["git_commit"] = git_commit
        append_row(dest / name, row, columns)
        have.add(key(row))
        added += 1
    return added


def import_runs(src: Path, dest: Path, name: str, git_commit: str = "", rename: dict[str, str] | None = None,
                note: str = "", origin: Path | None = None) -> list[str]:
    """Everything SRC (an untarred check or a results folder) holds, into dest; the new run_ids."""
    results, check = results_and_check(src)
    new, copied, rows = _import_runs(results, dest, git_commit, rename or {})
    tables = {t: _import_table(results, dest, t, git_commit) for t in TABLES}
    profiles = []
    for prof in sorted(p for p in (results / "profiles").glob("*") if p.is_dir()):
        if not (dest / "profiles" / prof.name).exists():
            shutil.copytree(prof, dest / "profiles" / prof.name)
            profiles.append(prof.name)
    notes = []
    if check is not None:
        for f in sorted(check.iterdir()):
            if f.is_file() and (f.name in NOTES or f.suffix == ".log"):
                target = dest / "imports" / name / f.name
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(f, target)
                    notes.append(f.name)
    if not (new or copied or any(tables.values()) or profiles or notes):
        return new  # imported before: its provenance file stays as written then
    orphans = sorted(set(copied) - {r["run_id"] for r in rows})
    lines = [f"# Imported: {name}", "", f"Imported {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from `{origin or src}` by "
             f"`scripts/import_runs.py`.", "",
             f"- rows appended to runs.csv: {', '.join(new) or 'none'}",
             f"- run folders copied: {', '.join(copied) or 'none'}",
             f"- run folders without a row: {', '.join(orphans) or 'none'}"]
    lines += [f"- rows appended to {t}: {n}" for t, n in tables.items()]
    lines.append(f"- profiles copied: {', '.join(profiles) or 'none'}")
    if notes:
        lines.append(f"- the check's notes and logs, in imports/{name}/: {', '.join(notes)}")
    if git_commit:
        lines.append(f"- `git_commit` read `unknown` on the machine (a copy of the tree without .git); set to "
                     f"`{git_commit}` here, the commit the copy was made from")
    lines += [f"- preset renamed `{a}` -> `{b}` (in the row and its config_json)" for a, b in (rename or {}).items()]
    if copied:
        lines.append("- run reports' PNGs are not carried: `make report RUN=<run_id>` rebuilds them")
    if note:
        lines += ["", note]
    atomic_write(dest / "imports" / f"{name}.md", "\n".join(lines) + "\n")
    return new


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("src", type=Path)
    p.add_argument("--name", required=True, help="names results/imports/<name>.md")
    p.add_argument("--results-dir", "--results_dir", type=Path, default=Path("results"))
    p.add_argument("--git-commit", "--git_commit", default="")
    p.add_argument("--rename-preset", "--rename_preset", action="append", default=[], help="old=new")
    p.add_argument("--note", default="")
    args = p.parse_args(argv)
    try:
        rename = dict(r.split("=", 1) for r in args.rename_preset)
    except ValueError:
        print("import: --rename-preset takes old=new", file=sys.stderr)
        return 2
    if not args.name.strip() or "/" in args.name:
        print(f"import: --name={args.name!r} names a file under imports/: give a plain name, e.g. h200-2026-12-03",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        src = args.src
        if src.is_file():
            try:
                with tarfile.open(src) as tar:
                    tar.extractall(tmp, filter="data")
            except (tarfile.TarError, OSError) as e:
                print(f"import: {src} is not a readable tarball ({e}): pass gpu-check's .tar.gz or a folder",
                      file=sys.stderr)
                return 2
            src = Path(tmp)
        results, check = results_and_check(src)
        if not src.is_dir() or not has_anything(results, check):
            print(f"import: {args.src} holds no gpu-check folder, runs.csv, {', '.join(TABLES)} or profiles/: pass "
                  f"gpu-check-<phase>.tar.gz, the folder it untars to, or a results folder", file=sys.stderr)
            return 2
        new = import_runs(src, args.results_dir, args.name, args.git_commit, rename, args.note, args.src)
    print(f"{len(new)} rows appended to {args.results_dir}/runs.csv; provenance in "
          f"{args.results_dir}/imports/{args.name}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
