"""Data-parallel runs under torchrun: process group, sharding, cross-rank reductions, SyncBatchNorm.

PyTorch's own engine throughout: torch.distributed (NCCL on CUDA, gloo on the CPU), DistributedDataParallel,
nn.SyncBatchNorm on GPUs. nn.SyncBatchNorm refuses CPU tensors, so on the CPU `CrossRankBatchNorm2d`
computes the same statistics with a differentiable all-reduce (torch.distributed.nn.functional).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from bench.core.config import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def env_world_size() -> int:
    """The number of ranks torchrun started (1 outside torchrun), known before any process group exists."""
    text = os.environ.get("WORLD_SIZE", "1")
    if not (text.strip().isdigit() and int(text) >= 1):
        raise ConfigError(f"WORLD_SIZE={text!r} is not a number of processes >= 1 (with make: GPUS=N, N >= 1): "
                          f"unset it, or let torchrun set it")
    return int(text)


def env_is_main() -> bool:
    """True on rank 0 (and outside torchrun): the one process that prints a refusal every rank reaches."""
    rank = os.environ.get("RANK", "0").strip()
    return not rank.isdigit() or int(rank) == 0  # a malformed RANK: print (the refusal names what is wrong)


def init_distributed(device_name: str) -> tuple[DistInfo, torch.device | None]:
    """Join the torchrun process group when WORLD_SIZE > 1; returns the rank info and this rank's device
    (None when not distributed: the caller resolves it as usual)."""
    world = env_world_size()
    if world <= 1:
        return DistInfo(), None
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = timedelta(seconds=float(os.environ.get("SPEEDRUN_DIST_TIMEOUT_S", "600")))
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timeout,
                                **({"device_id": device} if use_cuda else {}))
    return DistInfo(rank, world, local_rank), device


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(n: int, info: DistInfo) -> slice:
    """This rank's share of n items: every world-th item from its rank, trimmed so all shards are equal
    (equal shards give every rank the same number of steps, so no rank waits alone in a collective)."""
    per_rank = n // info.world
    return slice(info.rank, info.rank + per_rank * info.world, info.world)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


class CrossRankBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d with batch statistics over all ranks (the CPU stand-in for nn.SyncBatchNorm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce
        xf = x.float()
        local = torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)),
                           torch.tensor([xf.numel() / xf.shape[1]], device=x.device)])
        total = all_reduce(local)  # differentiable: backward sums the gradients of every rank's output
        c = x.shape[1]
        n = total[2 * c]
        mean = total[:c] / n
        var = (total[c:2 * c] / n - mean * mean).clamp_min(0)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
        scale = self.weight * torch.rsqrt(var + self.eps)
        y = xf * scale.view(1, -1, 1, 1) + (self.bias - mean * scale).view(1, -1, 1, 1)
        return y.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """nn.SyncBatchNorm on GPUs; CrossRankBatchNorm2d (same state_dict) elsewhere."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            new = CrossRankBatchNorm2d(child.num_features, child.eps, child.momentum).to(device)
            new.load_state_dict(child.state_dict())
            setattr(model, name, new)
        else:
            convert_sync_batchnorm(child, device)
    return model


def wrap_ddp(model: nn.Module, info: DistInfo, device: torch.device, sync_bn: bool) -> nn.Module:
    """SyncBatchNorm (optional) then DistributedDataParallel; the model itself when not distributed."""
    if not info.enabled:
        return model
    if sync_bn:
        model = convert_sync_batchnorm(model, device)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
