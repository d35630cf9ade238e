"""`make bench-pipeline`: run the pytest-benchmark epoch timings, append rows to results/pipeline.csv, print a table."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

from .results import append_row, environment

PIPELINE_COLUMNS = ("timestamp", "git_commit", "device", "device_type", "device_count", "torch_version", "triton_version",
                    "dali_version", "pipeline", "images", "rounds", "images_per_s", "images_per_s_min",
                    "images_per_s_max", "epoch_s_median", "epoch_s_stddev")
ROOT = Path(__file__).resolve().parent.parent


def rows_from_json(report: dict, env: dict, dali_version: str) -> list[dict]:
    rows = []
    for b in report["benchmarks"]:
        s, info = b["stats"], b["extra_info"]
        n = info["images"]
        rows.append({"timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"), **env,
                     "dali_version": dali_version, "pipeline": info["pipeline"], "images": n,
                     "rounds": s["rounds"], "images_per_s": n / s["median"], "images_per_s_min": n / s["max"],
                     "images_per_s_max": n / s["min"], "epoch_s_median": s["median"], "epoch_s_stddev": s["stddev"]})
    return rows


def table(rows: list[dict]) -> str:
    base = next((r["images_per_s"] for r in rows if r["pipeline"] == "dataloader"), None)
    lines = [f"device: {rows[0]['device']}" if rows else "no rows",
             "| pipeline | images/s (median) | min-max | epoch s | vs dataloader |", "|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['images_per_s'] / base:.1f}x" if base else "-"
        lines.append(f"| {r['pipeline']} | {r['images_per_s']:,.0f} | {r['images_per_s_min']:,.0f}-"
                     f"{r['images_per_s_max']:,.0f} | {r['epoch_s_median']:.2f} | {ratio} |")
    return "\n".join(lines)


def main(results_dir: str = "results", extra: list[str] | None = None) -> int:
    from pipeline.dali import dali_available
    ok, dali_version = dali_available()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "benchmarks" / "test_pipeline_speed.py"),
               f"--benchmark-json={out}", "--benchmark-disable-gc", *(extra or [])]
        rc = subprocess.run(cmd, cwd=ROOT).returncode
        if rc != 0 or not out.exists():
            print(f"pipeline benchmark failed (pytest exit {rc}); no rows written", file=sys.stderr)
            return rc or 1
        report = json.loads(out.read_text())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = rows_from_json(report, environment(device), dali_version if ok else "")
    for row in rows:
        append_row(Path(results_dir) / "pipeline.csv", row, PIPELINE_COLUMNS)
    print(table(rows))
    print(f"{len(rows)} rows appended to {results_dir}/pipeline.csv")
    return 0
