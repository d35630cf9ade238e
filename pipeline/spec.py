"""What every training loader must produce, and the seeds and constants all of them share.

Apart from pipeline/loaders.py so that the optional DALI loader (pipeline/dali.py), which loaders.py
builds on demand, need not import loaders.py back: the import graph stays a tree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .cifar10 import MEAN, STD


@dataclass(frozen=True)
class LoaderSpec:
    """What every loader must produce; built from the run config by `make_loader`."""
    batch_size: int
    crop_padding: int = 4
    flip: bool = True
    flip_alternate: bool = False  # flip each image at random in epoch 0, then the opposite way every epoch
    cutout_size: int = 8
    cutout_prob: float = 1.0
    cutout_clip: bool = True
    drop_last: bool = True
    seed: int = 0
    dtype: torch.dtype = torch.float32
    channels_last: bool = False

    def base_flips(self, n: int, device: torch.device) -> torch.Tensor:
        """(n,) bool: each image's flip in epoch 0 under flip_alternate, fixed by the seed alone."""
        gen = torch.Generator(device=device)
        gen.manual_seed(epoch_seed(self.seed, -1))
        return torch.rand(n, device=device, generator=gen) < 0.5

    def num_batches(self, n: int) -> int:
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def loader_spec(cfg, batch_size: int, seed: int) -> LoaderSpec:
    """What a run's training loader must produce (augmentation, dtype, layout) for one process; `cfg` is a RunConfig."""
    a = cfg.aug
    return LoaderSpec(batch_size=batch_size, crop_padding=a.crop_padding, flip=a.flip, flip_alternate=a.flip_alternate,
                      cutout_size=a.cutout_size, cutout_prob=a.cutout_prob, cutout_clip=a.cutout_clip,
                      drop_last=cfg.data.drop_last, seed=seed, dtype=_DTYPES[cfg.train.precision],
                      channels_last=cfg.train.channels_last)


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed per (run seed, epoch)."""
    return (seed * 1_000_003 + epoch * 7919 + 12345) % (2**63)


def mean_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor(MEAN, dtype=torch.float32, device=device),
            torch.tensor(STD, dtype=torch.float32, device=device))
