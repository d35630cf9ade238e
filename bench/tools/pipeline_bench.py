"""`python -m bench pipeline-bench`: images/s of each training pipeline on this device, each under a time cap.

Per pipeline: a warm-up of a few batches (CUDA context, cuDNN, DALI's build, the first worker fork), then
epochs over the real training set until `rounds` epochs are done or `time_cap_s` has passed; the cap may end
an epoch early, and the rate is then over the batches done. The device is synchronised before each clock
reading that ends a round. Each pipeline's line is printed as it finishes and its row appended to
<results_dir>/pipeline.csv. The first GPU run printed nothing in 45 s: the DataLoader and DALI rounds had
no limit of their own.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

from model.build import DTYPES

from bench.core.config import ConfigError
from bench.core.machine import default_device_type, environment
from bench.core.timer import synchronize
from bench.core.variants import build_config
from bench.records.results import ENV_COLUMNS, append_row

PIPELINES = ("device", "dali", "dataloader")
BATCH = 512  # the fast variant's training batch; batches are whole (drop_last), as training draws them
PIPELINE_COLUMNS = ("timestamp", *ENV_COLUMNS, "dali_version", "pipeline", "precision", "images", "rounds", "images_per_s",
                    "images_per_s_min", "images_per_s_max", "epoch_s_median", "epoch_s_stddev", "time_cap_s",
                    "capped")


def time_pipeline(loader, device: torch.device, rounds: int, time_cap_s: float, warmup_batches: int = 2,
                  clock: Callable[[], float] = time.perf_counter) -> dict:
    """Epochs of `loader` until `rounds` or `time_cap_s` (warm-up excluded): images, rates, whether the cap hit."""
    warm = loader.epoch(10**6)  # an epoch index no timed round uses
    for _ in zip(range(warmup_batches), warm):
        pass
    warm.close()
    synchronize(device)
    per_round: list[tuple[int, float]] = []  # (images, seconds)
    start, capped = clock(), False
    for r in range(rounds):
        t0, n = clock(), 0
        epoch = loader.epoch(r)
        for _, y in epoch:
            n += len(y)
            if clock() - start >= time_cap_s:
                capped = True
                break
        epoch.close()  # a DataLoader stopped mid-epoch shuts its workers down here
        synchronize(device)
        per_round.append((n, clock() - t0))
        if capped:
            break
    images, seconds = sum(n for n, _ in per_round), sum(s for _, s in per_round)
    rates = [n / s for n, s in per_round if n and s > 0]
    epoch_images = len(loader) * loader.spec.batch_size
    epoch_s = [epoch_images / r for r in rates]
    return {"images": images, "rounds": len(per_round), "images_per_s": images / seconds if seconds else 0.0,
            "images_per_s_min": min(rates, default=0.0), "images_per_s_max": max(rates, default=0.0),
            "epoch_s_median": statistics.median(epoch_s) if epoch_s else 0.0,
            "epoch_s_stddev": statistics.stdev(epoch_s) if len(epoch_s) > 1 else 0.0,
            "time_cap_s": time_cap_s, "capped": capped, "seconds": seconds}


def line(name: str, r: dict) -> str:
    cap = f", stopped by the {r['time_cap_s']:g} s cap" if r["capped"] else ""
    return (f"{name}: {r['images_per_s']:,.0f} img/s over {r['images']:,} images in {r['seconds']:.1f} s "
            f"({r['rounds']} epoch{'s' if r['rounds'] != 1 else ''}{cap})")


def table(rows: list[dict]) -> str:
    base = next((r["images_per_s"] for r in rows if r["pipeline"] == "dataloader"), None)
    lines = [f"device: {rows[0]['device']}" if rows else "no rows",
             "| pipeline | images/s | min-max per epoch | epoch s (median) | capped | vs dataloader |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['images_per_s'] / base:.1f}x" if base else "-"
        lines.append(f"| {r['pipeline']} | {r['images_per_s']:,.0f} | {r['images_per_s_min']:,.0f}-"
                     f"{r['images_per_s_max']:,.0f} | {r['epoch_s_median']:.2f} | {'yes' if r['capped'] else 'no'} | "
                     f"{ratio} |")
    return "\n".join(lines)


def parse_pipelines(text: str) -> list[str]:
    names = [p for p in text.split(",") if p]
    bad = [p for p in names if p not in PIPELINES]
    if bad or not names:
        raise ConfigError(f"--pipelines={text!r}: choose a comma list of {', '.join(PIPELINES)}")
    return names


def main(results_dir: str = "results", pipelines: str = ",".join(PIPELINES), rounds: int = 3,
         time_cap_s: float = 20.0, train_subset: int = 0, workers: int = 2) -> int:
    from pipeline import LoaderSpec, load_cifar10, make_loader
    from pipeline.dali import dali_available

    names = parse_pipelines(pipelines)
    if rounds < 1 or not time_cap_s > 0 or train_subset < 0:
        raise ConfigError("pipeline-bench needs --rounds >= 1, --time-cap-s > 0 and --train-subset >= 0")
    if 0 < train_subset < BATCH:  # no whole batch: every pipeline would time 0 images and append a row of 0 img/s
        raise ConfigError(f"--train-subset={train_subset} is under one batch of {BATCH} images, so nothing would be "
                          f"timed: give --train-subset >= {BATCH}, or 0 for all 50,000")
    device = torch.device(default_device_type())
    data = load_cifar10(os.environ.get("CIFAR10_DIR") or None, device).subset(train_subset, 0)
    env, (dali_ok, dali_info) = environment(device), dali_available()
    precision = build_config("fast4", "fast", "full", {}, device.type).train.precision  # what training consumes here
    spec = LoaderSpec(batch_size=BATCH, seed=0, dtype=DTYPES[precision], channels_last=True)
    print(f"pipeline-bench on {env['device']}: {len(data.train_images):,} training images, batch {BATCH}, {precision} "
          f"channels-last (the fast variant's), up to "
          f"{rounds} epochs or {time_cap_s:g} s per pipeline", flush=True)
    rows = []
    for name in names:
        if name == "dali" and not dali_ok:
            print(f"dali: unavailable ({dali_info})", flush=True)
            continue
        try:
            loader = make_loader(name, data.train_images, data.train_labels, spec, workers)
        except ImportError as e:  # the DataLoader baseline needs albumentations
            print(f"{name}: unavailable ({type(e).__name__}: {e}); `pip install albumentations` adds it", flush=True)
            continue
        r = time_pipeline(loader, device, rounds, time_cap_s)
        print(line(name, r), flush=True)
        row = {"timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"), **env,
               "dali_version": dali_info if dali_ok else "", "pipeline": name, "precision": precision,
               **{k: v for k, v in r.items() if k in PIPELINE_COLUMNS}}
        append_row(Path(results_dir) / "pipeline.csv", row, PIPELINE_COLUMNS)
        rows.append(row)
    print(table(rows))
    print(f"{len(rows)} rows appended to {results_dir}/pipeline.csv", file=sys.stderr if not rows else sys.stdout)
    return 0
