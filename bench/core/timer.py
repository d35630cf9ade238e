"""Device-synchronised wall clock: CUDA events on a GPU, perf_counter after a sync elsewhere."""
from __future__ import annotations

import time

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """`start()` ... `stop()` -> seconds of device work between them (queued work included)."""

    def __init__(self, device: torch.device):
        self.device = device
        self._t0 = 0.0
        self._events = None

    def start(self) -> None:
        if self.device.type == "cuda":
            self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            synchronize(self.device)
            self._events[0].record()
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> float:
        if self._events is not None:
            self._events[1].record()
            self._events[1].synchronize()
            seconds = self._events[0].elapsed_time(self._events[1]) / 1000.0
            self._events = None
            return seconds
        return time.perf_counter() - self._t0
