"""Compile warm-up without data: each asked variant trained for one short epoch on random images, untimed.

The first compile of a variant took 26-33 s on the H200 (the 2026-11-28 runs). Run on the GPU machine, it fills
Inductor's on-disk cache (same machine, same shapes: batch 512, evaluation batch 1024 over 10,000 test images),
so later timed runs start sooner; their own warm-up is still timed and reported apart. Prints the warm-up seconds
per variant: the compile time, on its own. Any `--key=value` is a config override, as for `python -m bench run`:
`make gpu-check`'s nodata phase trains `--variants=fast --compile=graph` this way, the path `bench run` takes
with a whole-step CUDA graph (the evaluation model compiled under the step's mode), without data.
Usage: python scripts/compile_warmup.py [--preset=fast] [--variants=compile,cuda-graphs] [--device=auto]
       [--train-images=1024] [--test-images=10000] [--key=value ...]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.cli import parse_overrides  # noqa: E402
from bench.core.config import ConfigError  # noqa: E402
from bench.core.train import fit, resolve_device  # noqa: E402
from bench.core.variants import build_config  # noqa: E402

from pipeline import CIFAR10  # noqa: E402


def synthetic(n_train: int, n_test: int, device: torch.device) -> CIFAR10:
    """Random uint8 images and labels with CIFAR-10's shapes: what compilation sees is shapes, not pixels."""
    g = torch.Generator().manual_seed(0)
    images = lambda n: torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)  # noqa: E731
    labels = lambda n: torch.randint(0, 10, (n,), generator=g)  # noqa: E731
    return CIFAR10(images(n_train), labels(n_train), images(n_test), labels(n_test)).to(device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--preset", default="fast4")
    p.add_argument("--variants", default="compile,cuda-graphs")
    p.add_argument("--device", default="auto")
    p.add_argument("--train-images", type=int, default=1024)
    p.add_argument("--test-images", type=int, default=10000)
    args, extra = p.parse_known_args(argv)
    try:
        if args.train_images < 1 or args.test_images < 1:
            raise ConfigError("--train-images and --test-images must be >= 1")
        overrides = {"train.epochs": "1", "train.device": args.device, **parse_overrides(extra)}
        device = resolve_device(args.device)
        cfgs = [build_config(args.preset, v, "full", overrides, device.type) for v in args.variants.split(",") if v]
        if not cfgs:
            raise ConfigError("--variants names no variant: e.g. --variants=fast")
        if args.train_images < cfgs[0].train.batch_size:
            raise ConfigError(f"--train-images={args.train_images} makes no batch of {cfgs[0].train.batch_size}: "
                              f"raise it or pass --batch_size")
        if any(c.train.compile == "graph" for c in cfgs):
            from bench.core.step import capture_for
            capture_for(device)  # a CPU without the stand-in: refused here, in one line
    except (ConfigError, RuntimeError) as e:
        print(f"compile warm-up: {e}", file=sys.stderr)
        return 2
    data = synthetic(args.train_images, args.test_images, device)
    for cfg in cfgs:
        t0 = time.perf_counter()
        r = fit(cfg, data, quiet=True)
        print(f"compile warm-up {cfg.preset}/{cfg.variant} (compile {cfg.train.compile}, norm {cfg.model.norm_kernel}): "
              f"warm-up {r.warmup_s:.1f} s, whole short run {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
