"""The race: variants of one recipe side by side on one device, same seeds, then one table."""
from __future__ import annotations

import math
import os
import statistics
from dataclasses import replace
from pathlib import Path

from pipeline import load_cifar10

from bench.core.config import TRAIN_IMAGES, RunConfig
from bench.core.distributed import env_is_main
from bench.core.machine import device_name
from bench.core.train import RunResult, resolve_device
from bench.records.leaderboard import NoRuns, load
from bench.records.stats import mean_cell, median_spread, share_cell, speedup, time_cells
from bench.run import train


def race(cfgs: list[RunConfig], runs: int, tensorboard: bool = False,
         full: dict[str, RunConfig] | None = None) -> dict[str, list[RunResult]]:
    """Run every config `runs` times (seeds seed..seed+runs-1, interleaved) and print the comparison. The configs
    are the ones the CLI built and checked (a variant of None is the recipe as it is: `run --runs=N`);
    `tensorboard`: each run also writes an event file; `full`: each variant under the full profile, for the
    estimate printed after a smoke race."""
    first = cfgs[0]
    device = resolve_device(first.train.device)
    main_rank = env_is_main()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    # loaded once, shared by every run; under torchrun each run moves it to its rank's device
    data = load_cifar10(first.data.data_dir or None, "cpu" if distributed else device)
    results: dict[str, list[RunResult]] = {cfg.variant: [] for cfg in cfgs}
    for i in range(runs):
        for cfg in cfgs:
            cfg = replace(cfg, train=replace(cfg.train, seed=cfg.train.seed + i))
            if main_rank:
                print(f"--- {cfg.variant} (run {i + 1}/{runs}, seed {cfg.train.seed}, pipeline {cfg.data.pipeline}, "
                      f"{cfg.train.precision}, {'channels-last' if cfg.train.channels_last else 'NCHW'}, "
                      f"compile {cfg.train.compile}, norm {cfg.model.norm_kernel})", flush=True)
            results[cfg.variant].append(train(cfg, data, tensorboard=tensorboard))
    if main_rank:
        print(race_table(results, first.train.target_acc, device_name(device)))
        if full:
            print(full_race_estimate(results, full, first.results_dir))
    return results


def gpu_times(results_dir: str, preset: str) -> list[str]:
    """`label median s on device` for each label of `preset` that reached the target on a GPU: the leaderboard's
    rows (each checked against its epoch log), not a second reading of runs.csv."""
    try:
        ok, _ = load(Path(results_dir))
    except NoRuns:
        return []
    rows = ok[(ok["device_type"] == "cuda") & (ok["preset"] == preset) & (ok["profile"] == "full")
              & (ok["status"] == "reached")]
    return [f"{label} {t.median():.1f} s on {device} ({len(t)} run{'s' if len(t) > 1 else ''})"
            for (label, device), t in rows.groupby(["label", "device"], sort=True)["time_to_target_s"]]


def full_race_estimate(results: dict[str, list[RunResult]], full: dict[str, RunConfig], results_dir: str) -> str:
    """One line after a smoke race: what the full race would take here, from the img/s just measured (training
    only, over the recipe's whole schedule: an upper bound where the target comes earlier), and on the GPU rows
    of this recipe in runs.csv. `full`: each variant's config under the full profile."""
    parts, total = [], 0.0
    for name, rs in results.items():
        cfg = full[name]
        images = cfg.train.epochs * (cfg.data.train_subset or TRAIN_IMAGES)
        ips = statistics.median(r.images_per_s for r in rs)
        seconds = images / ips if ips > 0 else math.inf
        total += seconds
        parts.append(f"{name} {seconds / 3600:.1f} h at {ips:,.0f} img/s")
    recipe = cfg.preset
    gpu = gpu_times(results_dir, recipe)
    return (f"estimate: the full race of the {recipe} recipe would train about {total / 3600:.1f} h on this machine "
            f"({'; '.join(parts)}; its {cfg.train.epochs} epochs, evaluation and compilation not counted); on a GPU: "
            + ("; ".join(gpu) if gpu else "no GPU row of this recipe in runs.csv yet"))


def race_table(results: dict[str, list[RunResult]], target: float, device: str) -> str:
    """Markdown table: one line per variant over its runs: the share that reached with its 95% interval, time to
    target as median (min-max) and olympic mean, best accuracy as mean ± 95% interval, speedup over `eager`."""
    def key_time(rs: list[RunResult]) -> tuple[str, list[float]]:
        reached = [r.time_to_target_s for r in rs if r.time_to_target_s is not None]
        if len(reached) == len(rs):
            return "target", reached
        return "epoch", [r.train_time_s / max(r.epochs_run, 1) for r in rs]

    base = key_time(results["eager"]) if "eager" in results else None
    lines = [f"device: {device}; target {100 * target:.1f}% test accuracy",
             "| variant | runs | reached (95% CI) | time to target s: median (min-max) | olympic mean s | "
             "best acc % (mean ± 95% CI) | epochs | img/s | warm-up s | speedup vs eager |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for v, rs in results.items():
        kind, times = key_time(rs)
        speed = "-"
        if base and base[0] == kind:
            speed = f"{speedup(base[1], times):.2f}x" + (" (per epoch)" if kind == "epoch" else "")
        reached = sum(r.status == "reached" for r in rs)
        median, olympic = time_cells([r.time_to_target_s for r in rs if r.time_to_target_s is not None])
        lines.append(f"| {v} | {len(rs)} | {share_cell(reached, len(rs))} | {median} | {olympic} | "
                     f"{mean_cell([r.best_test_acc for r in rs], 100)} | "
                     f"{median_spread([float(r.epochs_run) for r in rs])} | "
                     f"{statistics.median([r.images_per_s for r in rs]):,.0f} | "
                     f"{median_spread([r.warmup_s for r in rs])} | {speed} |")
    lines.append("reached: runs at the target of all runs, with the share's 95% Wilson interval; olympic mean: the "
                 "fastest and slowest dropped; speedup is the ratio of median times to target, or of median training "
                 "time per epoch where a variant did not reach the target in every run")
    return "\n".join(lines)
