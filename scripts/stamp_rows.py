"""One-off migration: stamp rows written before runs recorded their label, variant settings and machine facts.

    python scripts/stamp_rows.py [--results-dir=results] [--gpu-facts=NAME=device.txt ...] [--dry-run]

Only facts the rows already hold are used, and each stamped machine fact says where it came from (`source`):
- a CPU's native bf16: a `fast` row written after the variant began to ask the CPU (commit 1fa9c61,
  2026-12-01 22:47 UTC) trained in bf16 exactly when the CPU had native bf16; a bf16 row above 20 img/s proves
  it too (without native bf16 the bf16 step ran at 2.7 img/s on the AVX2 EPYC: 47.9 s per batch of 128); other
  rows of the same machine name on the same day take the same answer;
- a GPU's memory and clock: from the lease's `nvidia-smi` capture (`--gpu-facts="NVIDIA H200=<device.txt>"`).
The label and variant settings are then what the variant defined for that device type and that answer. What cannot
be stamped this way (no proof of the CPU's bf16; no data checksum, which only the run itself could take) is listed
and left empty: the leaderboard shows such a row's settings spelled out and its machine as 'bf16 unknown'.
Rows that already carry a label are left as they are, so a second run changes nothing.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.core import variants  # noqa: E402
from bench.core.config import ConfigError  # noqa: E402
from bench.core.recipes import base_preset  # noqa: E402
from bench.core.variants import axis_settings, build_config  # noqa: E402
from bench.records.labels import AXES, make_label  # noqa: E402
from bench.records.results import RUN_COLUMNS, write_csv  # noqa: E402

PROBE_SINCE = "2026-12-01T22:47:31+00:00"  # commit 1fa9c61: `fast` on a CPU asks for native bf16 from here on
NATIVE_BF16_IMG_S = 20.0  # bf16 training faster than this on a CPU is native (the reference path ran at 2.7 img/s)


def cpu_bf16_proof(row: dict) -> tuple[bool | None, str]:
    """(native bf16, why) from one CPU row alone; (None, '') when the row does not show it."""
    precision, variant = row.get("precision", ""), row.get("variant", "")
    if variant == "fast" and row.get("timestamp", "") >= PROBE_SINCE and precision in ("bf16", "fp32"):
        return precision == "bf16", f"the fast variant chose {precision} after commit 1fa9c61"
    try:
        fast = precision == "bf16" and float(row.get("images_per_s") or 0) > NATIVE_BF16_IMG_S
    except ValueError:
        fast = False
    if fast:
        return True, f"bf16 training at {float(row['images_per_s']):.0f} img/s"
    return None, ""


def _proof_facts(row: dict) -> dict | None:
    native, why = cpu_bf16_proof(row)
    return None if native is None else {"kind": "cpu", "native_bf16": native,
                                        "source": f"stamped later: run {row['run_id']}, {why}"}


def cpu_facts(rows: list[dict]) -> dict[tuple[str, str], dict]:
    """{(device name, date): facts} for each CPU machine-day that one of its rows proves."""
    found: dict[tuple[str, str], dict] = {}
    for row in rows:
        facts = _proof_facts(row) if row.get("device_type") == "cpu" else None
        key = (row.get("device", ""), row.get("timestamp", "")[:10])
        if facts and key not in found:
            found[key] = facts
    return found


def read_gpu_facts(spec: str) -> tuple[str, dict]:
    """`NAME=device.txt` (nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv)."""
    name, path = spec.split("=", 1)
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    values = [v.strip() for v in lines[1]]
    facts = {"kind": "cuda", "memory_gib": round(float(values[1].split()[0]) / 1024, 1),
             "clock_mhz": int(float(values[3].split()[0])), "source": f"stamped later from {path}"}
    return name, facts


def stamp(row: dict, facts: dict | None) -> dict:
    """The row with device_facts, label and variant_settings as its variant defined them for its machine."""
    out = dict(row)
    if facts is None:
        return out
    out["device_facts"] = json.dumps(facts, sort_keys=True)
    if any(not row.get(a) for a in AXES):
        return out
    device_type = row.get("device_type") or "cpu"
    native = facts.get("native_bf16")
    saved = variants.cpu_has_native_bf16
    variants.cpu_has_native_bf16 = lambda: bool(native)  # the variant's choice on that machine, not this one
    try:
        defined = axis_settings(build_config(base_preset(row["preset"]), row["variant"], row["profile"], {},
                                             device_type)) if row["variant"] in variants.VARIANTS else None
    except ConfigError:
        defined = None
    finally:
        variants.cpu_has_native_bf16 = saved
    if device_type == "cpu" and native is None and row["variant"] in variants.VARIANTS:
        return out  # what the variant meant there depends on the bf16 answer we lack
    out["label"] = make_label(row["variant"], defined, {a: row[a] for a in AXES})
    out["variant_settings"] = json.dumps(defined, sort_keys=True) if defined else ""
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results-dir", "--results_dir", type=Path, default=Path("results"))
    p.add_argument("--gpu-facts", "--gpu_facts", action="append", default=[], help="NAME=nvidia-smi csv file")
    p.add_argument("--dry-run", "--dry_run", action="store_true", help="list what would be stamped, write nothing")
    args = p.parse_args(argv)
    path = args.results_dir / "runs.csv"
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header, rows = list(reader.fieldnames or []), list(reader)
    gpus = dict(read_gpu_facts(s) for s in args.gpu_facts)
    cpus = cpu_facts(rows)
    out, report = [], []
    for row in rows:
        if row.get("label"):
            out.append(row)
            continue
        if row.get("device_type") == "cuda":
            facts = gpus.get(row.get("device", ""))
            facts = facts and {**facts, "gpus_used": int(row.get("device_count") or 1)}
        else:
            facts = _proof_facts(row) or cpus.get((row.get("device", ""), row.get("timestamp", "")[:10]))
        new = stamp(row, facts)
        missing = [c for c in ("device_facts", "label", "data_fingerprint") if not new.get(c)]
        report.append(f"{row['run_id']}: " + ("stamped" if not missing else
                                              f"not stamped: {', '.join(missing)}" if len(missing) == 3 else
                                              f"stamped, except {', '.join(missing)}"))
        out.append(new)
    print("\n".join(report) or "every row already carries its label: nothing to stamp")
    if not args.dry_run and report:
        columns = header + [c for c in RUN_COLUMNS if c not in header]
        write_csv(path, columns, out)
        print(f"{path}: {len(report)} rows stamped or listed; data checksums cannot be stamped after the fact")
    return 0


if __name__ == "__main__":
    sys.exit(main())
