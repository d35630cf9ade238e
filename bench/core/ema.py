"""An exponential moving average of a model's weights kept on the device: no AveragedModel, no host reads.

Every `every` steps the copy moves toward the model by `1 - decay**every` with one `_foreach_lerp_` over the
parameters and floating-point buffers (BatchNorm statistics averaged too); integer buffers are copied. The first
update copies the model outright, as `AveragedModel` does, so the two agree update for update.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class WeightEMA:
    """`module` is the averaged copy (evaluate it); `update(step)` is called after every optimiser step."""

    def __init__(self, model: nn.Module, decay: float, every: int = 1):
        self.module = copy.deepcopy(model).eval()
        self.every, self.weight = every, 1.0 - decay ** every
        self.updates = 0
        src = list(model.parameters()) + list(model.buffers())
        dst = list(self.module.parameters()) + list(self.module.buffers())
        floating = [t.is_floating_point() for t in src]
        self._src = [s.detach() for s, f in zip(src, floating) if f]
        self._dst = [d.detach() for d, f in zip(dst, floating) if f]
        self._src_int = [s for s, f in zip(src, floating) if not f]
        self._dst_int = [d for d, f in zip(dst, floating) if not f]

    def reset(self) -> None:
        """Forget the updates so far (a warm-up's): the next update copies the model outright, as a new EMA's would."""
        self.updates = 0

    @torch.no_grad()
    def update(self, step: int) -> None:
        """After optimiser step `step` (0-based, a host counter): average when (step + 1) is a multiple of `every`."""
        if (step + 1) % self.every:
            return
        torch._foreach_lerp_(self._dst, self._src, 1.0 if self.updates == 0 else self.weight)
        for d, s in zip(self._dst_int, self._src_int):
            d.copy_(s)
        self.updates += 1
