"""`python -m bench step-bench`: ms per training step and images/s, the previous step against the new one.

Rows: `plain` (eager model, Python-float LR from OneCycleLR, AveragedModel every step: the step before the
schedule and the EMA moved onto the device),
`new` eager, `new` compiled (`default`), and on CUDA `new` under CUDA graphs (`reduce-overhead`) and as one captured
whole step (`graph`); at batch 512 (the recipe's) and 16 (where host overhead dominates). Each row also says how many
graphs Dynamo compiled, how many graph breaks it met and how many times Inductor skipped CUDA graphs (the
`skipping cudagraphs due to ...` lines under TORCH_LOGS=cudagraphs): whether the mode did what it is named for.
With BENCH_CUDA_STANDIN=1 a CPU runs the CUDA-only modes too (no CUDA graphs there; `graph` through the capture's
CPU stand-in): the GPU check's rehearsal, whose rows are labelled with the CPU that wrote them. The CustomResNet, the fast variant's precision (bf16, or fp32 on a CPU without native bf16), channels-last, the fast recipe's
optimizer and EMA, random images (no data needed). Each row: warm-up steps (compilation) apart, then `steps`
timed steps between two device synchronisations. Appends to <results_dir>/step.csv.
"""
from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch._dynamo.utils import counters

from model.build import DTYPES, build_model

from bench.core.config import COMPILE_MODES, TRAIN_IMAGES, ConfigError
from bench.core.ema import WeightEMA
from bench.core.machine import default_device_type, environment
from bench.core.step import PlainStep, TrainStep, cuda_standin
from bench.core.timer import synchronize
from bench.core.variants import build_config
from bench.records.results import ENV_COLUMNS, append_row

STEP_COLUMNS = ("timestamp", *ENV_COLUMNS, "step", "compile", "batch_size", "precision", "channels_last",
                "warmup_steps", "steps", "ms_per_step", "images_per_s", "warmup_s", "graphs", "graph_breaks",
                "cudagraph_skips")
CUDA_ONLY = ("reduce-overhead", "max-autotune", "graph")  # CUDA graphs; a CPU runs them only as the stand-in


def time_steps(step, x: torch.Tensor, y: torch.Tensor, device: torch.device, warmup: int, steps: int) -> tuple[float, float]:
    """(warm-up seconds, seconds per timed step) of `step.step(x, y)`."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        step.step(x, y)
    synchronize(device)
    t1 = time.perf_counter()
    for _ in range(steps):
        step.step(x, y)
    synchronize(device)
    return t1 - t0, (time.perf_counter() - t1) / steps


def cases(device: torch.device, modes: str = "") -> list[tuple[str, str]]:
    """(step, compile mode) rows: the previous step, then the new one in each compile mode (default: off,
    default, and reduce-overhead (CUDA graphs) and graph on CUDA)."""
    cuda_like = device.type == "cuda" or cuda_standin()
    chosen = [m for m in modes.split(",") if m] or (
        ["off", "default", "reduce-overhead", "graph"] if device.type == "cuda" else ["off", "default"])
    bad = [m for m in chosen if m not in COMPILE_MODES or (m in CUDA_ONLY and not cuda_like)]
    if bad:
        raise ConfigError(f"step-bench --compile-modes: {','.join(bad)} not available here; choose from "
                          f"{', '.join(COMPILE_MODES)} (CUDA graphs need CUDA)")
    return [("plain", "off")] + [("new", m) for m in chosen]


def parse_batch_sizes(text: str) -> list[int]:
    """`512,16` -> [512, 16]; anything else is a ConfigError naming the value."""
    parts = [b.strip() for b in text.split(",") if b.strip()]
    if not parts or not all(b.isdigit() and int(b) >= 1 for b in parts):
        raise ConfigError(f"step-bench --batch-sizes={text!r}: give positive integers separated by commas, "
                          f"e.g. --batch-sizes=512,16")
    sizes = [int(b) for b in parts]
    too_big = [b for b in sizes if b > TRAIN_IMAGES]
    if too_big:  # an allocation traceback otherwise, after the model is built
        raise ConfigError(f"step-bench --batch-sizes: {too_big[0]:,} is more than the {TRAIN_IMAGES:,} training "
                          f"images; give sizes in [1, {TRAIN_IMAGES:,}], e.g. --batch-sizes=512,16")
    return sizes


def main(results_dir: str = "results", batch_sizes: str = "512,16", steps: int = 0, warmup: int = 3,
         compile_modes: str = "") -> int:
    device = torch.device(default_device_type())
    rows = cases(device, compile_modes)
    sizes = parse_batch_sizes(batch_sizes)
    env = environment(device)
    base = build_config("fast4", "fast", "full", {"device": device.type}, device.type)
    print(f"step-bench on {env['device']}: {base.train.precision}, channels-last, fast recipe's optimizer and EMA")
    print("| step | compile | batch | ms/step | img/s | warm-up s | graphs | graph breaks | cudagraph skips |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for bs in sizes:
        n = steps or (20 if device.type == "cuda" else (3 if bs >= 256 else 10))
        g = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(bs, 3, 32, 32, device=device, generator=g).to(
            dtype=DTYPES[base.train.precision], memory_format=torch.channels_last)
        y = torch.randint(0, 10, (bs,), device=device, generator=g)
        total = (warmup + n) * 2
        for kind, mode in rows:
            # this bench's warm-up is the run's: compile=graph captures in it (and needs one)
            cfg = replace(base, train=replace(base.train, compile=mode, batch_size=bs, warmup_steps=warmup))
            torch.manual_seed(0)
            counters.clear()
            model = build_model(cfg.model, device, True).train()
            if kind == "plain":  # as the plain step did: the average updated every step
                step = PlainStep(model, replace(cfg, optim=replace(cfg.optim, ema_every=1)), device, total)
            else:
                step = TrainStep(model, cfg, device, warmup + n, total,
                                 WeightEMA(model, cfg.optim.ema_decay, cfg.optim.ema_every))
            warm_s, per_step = time_steps(step, x, y, device, warmup, n)
            row = {"timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"), **env, "step": kind,
                   "compile": mode, "batch_size": bs, "precision": cfg.train.precision, "channels_last": True,
                   "warmup_steps": warmup, "steps": n, "ms_per_step": 1000 * per_step,
                   "images_per_s": bs / per_step, "warmup_s": warm_s,
                   "graphs": int(counters["stats"]["unique_graphs"]),
                   "graph_breaks": sum(counters["graph_break"].values()),
                   "cudagraph_skips": int(counters["inductor"]["cudagraph_skips"])}
            append_row(Path(results_dir) / "step.csv", row, STEP_COLUMNS)  # row by row: a cut run keeps its rows
            print(f"| {kind} | {mode} | {bs} | {1000 * per_step:,.1f} | {bs / per_step:,.0f} | {warm_s:.1f} | "
                  f"{row['graphs']} | {row['graph_breaks']} | {row['cudagraph_skips']} |", flush=True)
            torch._dynamo.reset()
    print(f"rows appended to {results_dir}/step.csv")
    return 0
