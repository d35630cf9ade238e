"""Bring the rows and run folders of a results folder made elsewhere (a GPU machine's gpu-check) into results/.

Rows are appended through the one results writer (locked, atomic); a run_id already present is left alone,
so importing twice changes nothing. Every runs/<id>/ folder is copied, those without a row too (the
leaderboard lists them apart). A copy of the tree without .git stamps rows `git_commit=unknown`: --git-commit
names the commit the copy came from, and the provenance file says that it was supplied afterwards.
Usage: python scripts/import_runs.py SRC --name=h200-2026-11-28 [--git-commit=d9ecd36] [--rename-preset=fast=fast8]
       [--results-dir=results] [--note="..."]
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import RUN_COLUMNS, append_row, atomic_write  # noqa: E402


def import_runs(src: Path, dest: Path, name: str, git_commit: str = "", rename: dict[str, str] | None = None,
                note: str = "") -> list[str]:
    """Append src's new rows to dest/runs.csv, copy its run folders, write dest/imports/<name>.md; the new run_ids."""
    rename = rename or {}
    with open(src / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    have = set()
    if (dest / "runs.csv").is_file():
        with open(dest / "runs.csv", newline="") as f:
            have = {r.get("run_id") for r in csv.DictReader(f)}
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
    for run in sorted(p for p in (src / "runs").iterdir() if p.is_dir()):
        if not (dest / "runs" / run.name).exists():
            shutil.copytree(run, dest / "runs" / run.name)
            copied.append(run.name)
    if not new and not copied:
        return new  # imported before: its provenance file stays as written then
    orphans = sorted(set(copied) - {r["run_id"] for r in rows})
    lines = [f"# Imported: {name}", "", f"Imported {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from `{src}` by "
             f"`scripts/import_runs.py`.", "",
             f"- rows appended to runs.csv: {', '.join(new) or 'none (all present already)'}",
             f"- run folders copied: {', '.join(copied) or 'none'}",
             f"- run folders without a row: {', '.join(orphans) or 'none'}"]
    if git_commit:
        lines.append(f"- `git_commit` read `unknown` on the machine (a copy of the tree without .git); set to "
                     f"`{git_commit}` here, the commit the copy was made from")
    lines += [f"- preset renamed `{a}` -> `{b}` (in the row and its config_json)" for a, b in rename.items()]
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
    if not (args.src / "runs.csv").is_file() or not (args.src / "runs").is_dir():
        print(f"import: {args.src} has no runs.csv and runs/ folder: pass a results folder (gpu-check's "
              f"gpu-check-data/results once untarred)", file=sys.stderr)
        return 2
    try:
        rename = dict(r.split("=", 1) for r in args.rename_preset)
    except ValueError:
        print("import: --rename-preset takes old=new", file=sys.stderr)
        return 2
    new = import_runs(args.src, args.results_dir, args.name, args.git_commit, rename, args.note)
    print(f"{len(new)} rows appended to {args.results_dir}/runs.csv; provenance in "
          f"{args.results_dir}/imports/{args.name}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
