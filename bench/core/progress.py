"""The one progress display inside an epoch: on a terminal a line redrawn in place (and cleared at the epoch's
end); in a log, a pipe or `make ... | tee`, a new line every N seconds, so an eager CPU epoch of 14 minutes is not
silent and a log is not flooded.

The step count is the loop's host-side counter: reading a loss from the device here would sync every step.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

PROGRESS_EVERY_S = 60.0  # in a log
REDRAW_EVERY_S = 0.5  # on a terminal


class Progress:
    """`update(step)` after each step shows `<desc>: step k/n (p%), s s`: redrawn in place on a terminal (at most
    every `redraw_s`), a new line once every `every_s` seconds elsewhere; `close()` clears a terminal's line."""

    def __init__(self, total: int, desc: str, every_s: float = PROGRESS_EVERY_S, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic, enabled: bool = True, redraw_s: float = REDRAW_EVERY_S):
        self.total, self.desc = total, desc
        self.stream = stream or sys.stdout
        self.terminal = _isatty(self.stream)
        self.every_s = redraw_s if self.terminal else every_s
        self.enabled = enabled
        self.clock = clock
        self._t0 = clock()
        self._next = self._t0 + self.every_s
        self._width = 0  # of the line drawn on a terminal

    def update(self, step: int) -> None:
        """`step`: steps done so far in this epoch (a Python int, never a device tensor)."""
        if not self.enabled:
            return
        now = self.clock()
        if now < self._next:
            return
        self._next = now + self.every_s
        line = f"{self.desc}: step {step}/{self.total} ({100 * step / max(self.total, 1):.0f}%), {now - self._t0:.0f} s"
        if self.terminal:
            self.stream.write("\r" + line.ljust(self._width))
            self.stream.flush()
            self._width = len(line)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        """The epoch's end: a terminal's line is cleared (the epoch's summary line takes its place)."""
        if self.enabled and self.terminal and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-like stream without a terminal
        return False
