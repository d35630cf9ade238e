"""A progress line every N seconds inside an epoch when stdout is not a terminal (a log, a pipe, `make ... | tee`).

On a terminal tqdm draws the bar; in a log it draws nothing, and an eager CPU epoch is 14 silent minutes.
The step count is the loop's host-side counter: reading a loss from the device here would sync every step.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

PROGRESS_EVERY_S = 60.0


class Progress:
    """`update(step)` after each step prints `<desc>: step k/n (p%), s s` once every `every_s` seconds."""

    def __init__(self, total: int, desc: str, every_s: float = PROGRESS_EVERY_S, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic, enabled: bool | None = None):
        self.total, self.desc, self.every_s = total, desc, every_s
        self.stream = stream or sys.stdout
        self.enabled = not _isatty(self.stream) if enabled is None else enabled
        self.clock = clock
        self._t0 = clock()
        self._next = self._t0 + every_s

    def update(self, step: int) -> None:
        """`step`: steps done so far in this epoch (a Python int, never a device tensor)."""
        if not self.enabled:
            return
        now = self.clock()
        if now < self._next:
            return
        self._next = now + self.every_s
        print(f"{self.desc}: step {step}/{self.total} ({100 * step / max(self.total, 1):.0f}%), "
              f"{now - self._t0:.0f} s", file=self.stream, flush=True)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-like stream without a terminal
        return False
