"""`python -m bench choose-fast`: measure the training throughput of each execution setting on this device.

`fast` is a per-device-type table in bench/core/variants.py; this command is the measurement behind it. Each
candidate trains a few steps of the seed recipe through the one training loop (warm-up excluded) and
the rows go to results/variants.csv, so the choice can be re-checked on any machine.
"""
from __future__ import annotations

import itertools
from datetime import datetime, timezone
from pathlib import Path

import torch

from pipeline import load_cifar10

from bench.core.machine import environment
from bench.core.train import fit, resolve_device
from bench.core.variants import build_config
from bench.records.results import ENV_COLUMNS, append_row

VARIANT_COLUMNS = ("timestamp", *ENV_COLUMNS, "precision", "channels_last", "compile", "norm_kernel", "pipeline", "steps",
                   "batch_size", "images_per_s", "warmup_s", "chosen_by_config")


def candidates(device_type: str, compile_modes: list[str]) -> list[dict[str, str]]:
    norm = ["eager", "triton"] if device_type == "cuda" else ["eager"]  # interpreted Triton is not a speed option
    return [{"precision": p, "channels_last": str(cl), "compile": c, "norm_kernel": n}
            for p, cl, c, n in itertools.product(["fp32", "bf16"], [False, True], compile_modes, norm)]


def main(results_dir: str = "results", steps: int = 4, compile_modes: list[str] | None = None,
         batch_size: int = 512) -> int:
    device = resolve_device("auto")
    compile_modes = compile_modes or (["off", "default", "max-autotune"] if device.type == "cuda" else ["off", "default"])
    fast = build_config("seed", "fast", "full", device_type=device.type)
    data = load_cifar10(None, device)
    env = environment(device)
    rows = []
    for cand in candidates(device.type, compile_modes):
        # one evaluation batch: a run evaluates its last epoch, and this command times only the training steps
        over = {**cand, "batch_size": str(batch_size), "train_subset": str(steps * batch_size),
                "test_subset": str(batch_size), "epochs": "1", "stop_at_target": "false",
                "warmup_steps": "2" if cand["compile"] != "off" else "1", "pipeline": "device", "results_dir": results_dir}
        cfg = build_config("seed", None, "full", over, device.type)
        torch._dynamo.reset()
        r = fit(cfg, data, quiet=True)
        t = cfg.train
        chosen = (t.precision, t.channels_last, t.compile, cfg.model.norm_kernel) == (
            fast.train.precision, fast.train.channels_last, fast.train.compile, fast.model.norm_kernel)
        row = {"timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"), **env,
               "precision": t.precision, "channels_last": t.channels_last, "compile": t.compile,
               "norm_kernel": cfg.model.norm_kernel, "pipeline": "device", "steps": steps,
               "batch_size": t.batch_size, "images_per_s": r.images_per_s, "warmup_s": r.warmup_s,
               "chosen_by_config": chosen}
        append_row(Path(results_dir) / "variants.csv", row, VARIANT_COLUMNS)
        rows.append(row)
        print(f"{t.precision:5s} {'channels-last' if t.channels_last else 'NCHW':13s} compile={t.compile:12s} "
              f"norm={cfg.model.norm_kernel:6s} {r.images_per_s:8,.0f} img/s  warm-up {r.warmup_s:6.1f} s"
              + ("   <- fast" if chosen else ""), flush=True)
    best = max(rows, key=lambda r: r["images_per_s"])
    mine = next((r for r in rows if r["chosen_by_config"]), None)
    print(f"fastest here: {best['precision']} channels_last={best['channels_last']} compile={best['compile']} "
          f"norm={best['norm_kernel']} ({best['images_per_s']:,.0f} img/s)")
    if mine is not None and mine is not best:
        print(f"`fast` for {device.type} is {mine['images_per_s']:,.0f} img/s, "
              f"{best['images_per_s'] / mine['images_per_s']:.2f}x slower than the fastest: update fast_variant")
    print(f"{len(rows)} rows appended to {results_dir}/variants.csv")
    return 0
