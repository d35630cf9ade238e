"""What machine a record was made on: its name and the facts that change its speed, stamped into every row.

A row keeps these facts as they were when it was written, so a table built later on another machine reads it the
same way: two CPUs with one model name but different instruction sets (one with native bf16, one without) get
different headings. Nothing here is asked again of today's machine when an old row is read.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

# CPU flags (as /proc/cpuinfo spells them) that change this benchmark's speed: oneDNN's bf16 convolutions run
# natively only with AVX512-BF16 or AMX; without them bf16 measured ~13x slower than fp32 (docs/variants.md)
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The ISA_FLAGS this CPU reports, in ISA_FLAGS order ([] where /proc/cpuinfo cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [flag for flag in ISA_FLAGS if flag in have]
    except OSError:
        pass
    return []


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bf16 convolutions natively (oneDNN with AVX512-BF16 or AMX). Without, oneDNN's bf16
    path is a reference one: a 128x128x32x32 3x3 convolution took 2.54 s in bf16 vs 0.33 s in fp32, both
    channels-last (AVX2 AMD EPYC, 2 cores, timed by hand with F.conv2d)."""
    import torch  # here, not at the top: the config tree imports this module and needs no torch
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def default_device_type() -> str:
    """'cuda' where a CUDA device is visible, else 'cpu': what `auto` and the tools run on."""
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_name(device) -> str:
    """'NVIDIA H100 80GB HBM3' on CUDA; the CPU model and the threads torch uses otherwise."""
    import torch
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({torch.get_num_threads()} threads)"


def device_facts(device, devices_used: int = 1) -> dict:
    """The facts that change speed. CPU: threads used, cores present, native bf16, ISA flags. CUDA: SM count,
    memory, compute capability, and how many GPUs the run used."""
    import torch
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        facts = {"kind": "cuda", "sms": p.multi_processor_count, "memory_gib": round(p.total_memory / 2**30, 1),
                 "capability": f"{p.major}.{p.minor}", "gpus_used": devices_used}
        clock = getattr(p, "clock_rate", None)  # kHz where this torch exposes it
        if clock:
            facts["clock_mhz"] = round(clock / 1000)
        return facts
    return {"kind": "cpu", "threads": torch.get_num_threads(), "cores": os.cpu_count(), "native_bf16": cpu_has_native_bf16(),
            "isa": cpu_flags()}


def facts_text(facts_json: str) -> str:
    """A heading's qualifier from a row's `device_facts` cell: `native bf16, AMX` / `no native bf16, AVX2` /
    `132 SMs, 139.8 GiB, sm_90`; 'machine facts not recorded' for a row without them. Where the facts came from
    (`source`, set by scripts/stamp_rows.py for rows stamped after the fact) is kept in the row, not the heading."""
    try:
        facts = json.loads(facts_json) if facts_json else {}
    except (TypeError, ValueError):
        facts = {}
    if not isinstance(facts, dict) or not facts:
        return "machine facts not recorded"
    if facts.get("kind") == "cuda":
        parts = [f"{facts['sms']} SMs" if facts.get("sms") else "",
                 f"{facts['memory_gib']} GiB" if facts.get("memory_gib") else "",
                 f"sm_{str(facts['capability']).replace('.', '')}" if facts.get("capability") else "",
                 f"{facts['clock_mhz']} MHz" if facts.get("clock_mhz") else "",
                 f"{facts['gpus_used']} GPUs" if facts.get("gpus_used", 1) != 1 else ""]
        return ", ".join(p for p in parts if p) or "machine facts not recorded"
    bf16 = facts.get("native_bf16")
    parts = ["bf16 unknown" if bf16 is None else ("native bf16" if bf16 else "no native bf16")]
    isa = facts.get("isa") or []
    if "amx_bf16" in isa:
        parts.append("AMX")
    elif "avx512f" in isa:
        parts.append("AVX-512")
    elif "avx2" in isa:
        parts.append("AVX2")
    elif "isa" not in facts:
        parts.append("ISA not recorded")
    return ", ".join(parts)


def device_heading(device: str, facts_json: str) -> str:
    """The leaderboard heading of a row's machine, from the row alone."""
    return f"{device}: {facts_text(facts_json)}"


def git_commit(root: Path | None = None) -> str:
    """Short commit of the working tree, '-dirty' when tracked files other than results/ and Markdown differ from it
    (rows and reports that runs append, and prose written while a run trains, do not change the code that ran). Without .git (a copy of the tree, as GPU machines
    get): $BENCH_GIT_COMMIT as given by whoever made the copy, else 'unknown' (commit_note says so)."""
    root = root or Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():  # else git would answer for whatever repository encloses the copy
        return os.environ.get("BENCH_GIT_COMMIT", "").strip() or "unknown"
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results", ":(exclude)*.md"], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("BENCH_GIT_COMMIT", "").strip() or "unknown"


def commit_note(commit: str) -> str:
    """What a summary line adds when the code that ran cannot be named ('' when it can)."""
    if commit != "unknown":
        return ""
    return "git commit unknown (no .git here): set BENCH_GIT_COMMIT=<the commit this copy came from>"


def triton_version() -> str:
    """From the package metadata, not `import triton`: Triton reads TRITON_INTERPRET once, at its first import,
    and that must be the model's choice (interpreter on a CPU), not this stamp's."""
    for dist in ("triton", "pytorch-triton"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return ""


def environment(device, devices_used: int = 1) -> dict[str, Any]:
    """The stamp every CSV row carries: commit, machine (name and the facts that change speed), versions."""
    import torch
    return {"git_commit": git_commit(), "device": device_name(device), "device_type": device.type,
            "device_count": torch.cuda.device_count() if device.type == "cuda" else 1,
            "device_facts": json.dumps(device_facts(device, devices_used), sort_keys=True),
            "torch_version": torch.__version__, "triton_version": triton_version()}
