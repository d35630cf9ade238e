"""The per-step log of a run: `steps.csv` beside `epochs.csv`, and optionally a TensorBoard event file.

Both are written after each epoch from what the loop has already read to the host (every step's loss, read once
per epoch; the LR schedule, a host list), so the log adds no host read to the steps.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.records.results import write_csv
from bench.records.tensorboard_events import EventFile

STEP_COLUMNS = ("epoch", "step", "lr", "loss")  # step: global, 1-based; loss: the mean over ranks
EPOCH_SCALARS = {"test/acc": "test_acc", "train/acc": "train_acc", "train/loss_epoch": "train_loss",
                 "time/train_s": "train_time_s"}  # TensorBoard tag -> epochs.csv column


class StepLog:
    """`run_dir/steps.csv`, rewritten atomically after each epoch (a stopped run keeps its finished epochs), and
    with `tensorboard` the same curve plus the epoch log as scalars in `run_dir/tensorboard/` (on `flush`)."""

    def __init__(self, run_dir: Path, tensorboard: bool = False):
        self.path = Path(run_dir) / "steps.csv"
        self.tensorboard = Path(run_dir) / "tensorboard"
        self.rows: list[dict[str, Any]] = []
        self.events = EventFile(self.tensorboard) if tensorboard else None

    def add_steps(self, rows: list[dict[str, Any]]) -> None:
        self.rows += rows
        write_csv(self.path, STEP_COLUMNS, self.rows)
        for r in rows if self.events else ():
            self.events.scalar("train/loss", r["loss"], r["step"])
            self.events.scalar("train/lr", r["lr"], r["step"])

    def add_epoch(self, row: dict[str, Any]) -> None:
        """An epochs.csv row, as scalars at the global step of its epoch's last step (one x-axis for both)."""
        if not self.events:
            return
        step = self.rows[-1]["step"]
        for tag, column in EPOCH_SCALARS.items():
            if row.get(column) is not None:  # test_acc is None for an epoch not evaluated
                self.events.scalar(tag, row[column], step)

    def flush(self) -> None:
        if self.events:
            self.events.flush()
