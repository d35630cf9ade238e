"""What a command checks before any training, so a bad input costs a line, not an epoch.

Each check raises an error whose message names the cause and the fix; `bench.cli.main` prints it as one line
and exits 2. Under torchrun every rank runs the same checks on the same inputs, so all ranks refuse together
before any process group exists, and rank 0 alone prints.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
from pathlib import Path

import torch

from pipeline.cifar10 import resolve_data_dir, verify_md5

from bench.core.config import TRAIN_IMAGES, ConfigError, RunConfig
from bench.core.distributed import env_world_size
from bench.records.results import RUN_COLUMNS, check_csv, check_results_dir


class MissingPackage(RuntimeError):
    """An optional package the config asks for is not installed; the message says how to install it."""


def check_device(cfg: RunConfig) -> str:
    """The device type the run will use ('cuda' or 'cpu'); refuses a CUDA device that is not there, and a
    whole-step CUDA graph without one."""
    name = cfg.train.device
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        if cfg.train.compile == "graph":
            raise ConfigError("train.compile=graph captures the step as a CUDA graph; this run is on the CPU: "
                              "use --compile=default (or run on a CUDA device)")
        return "cpu"
    if name == "auto":
        return "cuda"
    if not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but no CUDA device is visible: use --device=cpu or --device=auto")
    index = int(name.split(":")[1]) if ":" in name else 0
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"train.device={name} but only {count} CUDA device(s) are visible (cuda:0..cuda:{count - 1})")
    return "cuda"


def check_batch(cfg: RunConfig, world: int) -> None:
    """The global batch splits evenly over the ranks, and each rank's share of the images makes a batch."""
    t, d = cfg.train, cfg.data
    if t.batch_size % world:
        raise ConfigError(f"train.batch_size={t.batch_size} does not split evenly over {world} ranks: "
                          f"use a multiple of {world} (e.g. --batch_size={t.batch_size // world * world or world})")
    images = min(d.train_subset, TRAIN_IMAGES) if d.train_subset else TRAIN_IMAGES
    if d.drop_last and (images // world) // (t.batch_size // world) == 0:
        raise ConfigError(f"train.batch_size={t.batch_size} is larger than the {images:,} training images "
                          f"(data.train_subset={d.train_subset}) over {world} rank(s): no full batch with "
                          f"data.drop_last=true; lower --batch_size or raise --train_subset")


def check_packages(cfg: RunConfig, device_type: str) -> None:
    """DALI and Triton when the config asks for them; chooses Triton's interpreter for a CPU run."""
    if cfg.data.pipeline == "dali":
        from pipeline.dali import dali_available
        ok, why = dali_available()
        if not ok:
            raise MissingPackage(f"data.pipeline=dali: {why}; or use --pipeline=device")
    if cfg.model.norm_kernel == "triton":
        if importlib.util.find_spec("triton") is None:
            raise MissingPackage("model.norm_kernel=triton needs the triton package: pip install triton "
                                 "(or `pip install .[triton]`); or use --norm_kernel=eager")
        if device_type == "cpu":  # read by Triton once, at its first import: set it before anything imports it
            os.environ.setdefault("TRITON_INTERPRET", "1")


def check_cpp_compiler(cfg: RunConfig, device_type: str) -> None:
    """torch.compile on a CPU generates C++ and builds it with the system compiler: without a working one the run
    would fail in its warm-up, after the data load, with Inductor's traceback."""
    if device_type != "cpu" or cfg.train.compile == "off":
        return
    why = cpp_compiler_problem()
    if why:
        raise MissingPackage(f"train.compile={cfg.train.compile} on a CPU builds C++ with the system compiler: {why}; "
                             f"install one (e.g. apt install g++, or set CXX) or use --compile=off")


@functools.cache
def cpp_compiler_problem() -> str:
    """'' when Inductor's C++ compiler is found and builds a one-line program; else what went wrong."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
        cxx = get_cpp_compiler()
    except Exception as e:  # Inductor's own error when no candidate is on PATH
        return f"none found ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    try:
        done = subprocess.run([cxx, "-x", "c++", "-", "-o", os.devnull], input=b"int main() { return 0; }\n",
                              capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{cxx} could not run ({e})"
    if done.returncode:
        first = (done.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[0]
        return f"{cxx} failed to build a one-line program ({first})"
    return ""


def check_data(cfg: RunConfig) -> Path:
    """The data folder as training will read it: present, right sizes, readable, official MD5s (cached)."""
    return verify_md5(resolve_data_dir(cfg.data.data_dir or None))


def preflight(cfgs: list[RunConfig], csv_name: str = "runs.csv") -> None:
    """Every check, cheapest first, for each config a command will run (a race runs one per variant)."""
    world = env_world_size()
    for cfg in cfgs:
        check_batch(cfg, world)
        device_type = check_device(cfg)
        check_packages(cfg, device_type)
        check_cpp_compiler(cfg, device_type)
    for results_dir in dict.fromkeys(cfg.results_dir for cfg in cfgs):
        check_results_dir(results_dir)
        check_csv(Path(results_dir) / csv_name, RUN_COLUMNS if csv_name == "runs.csv" else ())
    for data_dir in dict.fromkeys(cfg.data.data_dir for cfg in cfgs):
        check_data(next(cfg for cfg in cfgs if cfg.data.data_dir == data_dir))
