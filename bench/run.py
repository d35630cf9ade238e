"""`python -m bench run`: train one config through the loop (bench/core/train.py `fit`) and record it as it goes:
the epoch and step logs after each epoch (with `--tensorboard`, an event file too), then the row in runs.csv, then
the report. Race and ladder record each of their runs through `train` here.
"""
from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.core.config import RunConfig
from bench.core.distributed import DistInfo, env_is_main
from bench.core.machine import commit_note
from bench.core.train import RunResult, fit, new_run_id
from bench.core.variants import axis_settings, variant_settings
from bench.records.labels import make_label
from bench.records.report import write_report
from bench.records.results import EPOCH_COLUMNS, ResultsError, append_row, atomic_write, keep_unrecorded_row, write_csv
from bench.records.steplog import StepLog
from pipeline import CIFAR10
from pipeline.cifar10 import data_fingerprint


def train(cfg: RunConfig, data: CIFAR10 | None = None, write: bool = True, quiet: bool = False,
          on_epoch: Callable[[dict[str, Any]], None] | None = None, tensorboard: bool = False) -> RunResult:
    """`fit`, then (when `write`, on rank 0) record it: the epoch and step logs as it goes (with `tensorboard`, an
    event file too), then the row, then the report."""
    run_id = new_run_id()
    run_dir = Path(cfg.results_dir) / "runs" / run_id
    steps = StepLog(run_dir, tensorboard) if write and env_is_main() else None

    def log_epoch(epochs: list[dict[str, Any]]) -> None:
        if steps:
            write_log("epoch log", run_dir / "epochs.csv", len(epochs),
                      lambda: write_csv(run_dir / "epochs.csv", EPOCH_COLUMNS, epochs))
            steps.add_epoch(epochs[-1])
            write_log("TensorBoard event file", steps.tensorboard, len(epochs), steps.flush)
        if on_epoch:
            on_epoch(epochs[-1])

    def log_steps(rows: list[dict[str, Any]]) -> None:
        epoch = rows[0]["epoch"]
        write_log("step log", steps.path, epoch, lambda: steps.add_steps(rows))
        write_log("TensorBoard event file", steps.tensorboard, epoch, steps.flush)
    r = fit(cfg, data, quiet, log_epoch, run_id, log_steps if steps else None)
    main = r.info.is_main
    summary = summary_line(cfg, r, r.env)  # said at the end, or above the error when the row cannot be written
    if write and main:
        r.run_dir = run_dir
        row = result_row(cfg, r, r.env, r.data, r.info)
        try:
            if not r.epochs:  # diverged in epoch 1: log_epoch never ran, and the summary names this file
                write_csv(run_dir / "epochs.csv", EPOCH_COLUMNS, r.epochs)
            append_row(Path(cfg.results_dir) / "runs.csv", row)
        except OSError as e:  # a full disk: the result is printed and kept beside the run, runs.csv is unchanged
            print(summary, flush=True)
            kept = keep_unrecorded_row(run_dir, row)
            raise ResultsError(f"the row could not be appended to {cfg.results_dir}/runs.csv ({e.strerror or e}); "
                               f"runs.csv is unchanged; the result is the line above"
                               + (f"; the row is kept in {kept} (its second line is the runs.csv line)"
                                  if kept else "") + ": free space, then add it or run again") from None
        if not quiet:
            print(f"row appended to {cfg.results_dir}/runs.csv (run {run_id}); epoch log in {run_dir}/epochs.csv")
            if tensorboard:
                print(f"TensorBoard: tensorboard --logdir {run_dir}/tensorboard")
        if r.preds is not None:  # after the row: a failing figure must not cost the evidence
            try:
                buf = io.BytesIO()
                np.save(buf, r.preds)
                atomic_write(run_dir / "test_predictions.npy", buf.getvalue())  # a cut save leaves no stub
                write_report(run_dir, cfg, r.data.to("cpu"), r.preds, label=row["label"])
            except Exception as e:
                print(f"report not written ({type(e).__name__}: {e}); the row is recorded; "
                      f"`make report RUN={run_id}` retries", flush=True)
            except BaseException as e:  # Ctrl-C or SIGTERM while drawing: the CLI says the row is in, not lost
                e.recorded_run = run_id
                raise
    if not quiet and main:
        print(summary)
    return r


def write_log(what: str, path: Path, epoch: int, write: Callable[[], None]) -> None:
    """`write()` a log beside the run; a full disk mid-run stops the run here, in one line, rather than let it
    train unrecorded."""
    try:
        write()
    except OSError as e:
        raise ResultsError(f"the {what} {path} could not be written ({e.strerror or e}); the run stopped at epoch "
                           f"{epoch} and wrote no row: free space or fix permissions, then run again") from None


def result_row(cfg: RunConfig, r: RunResult, env: dict[str, Any], data: CIFAR10,
               info: DistInfo = DistInfo()) -> dict[str, Any]:
    """The CSV row of a finished run: environment (taken when it started), outcome, variant axes, full config."""
    t = cfg.train
    if info.enabled and env["device_type"] == "cuda":
        env = {**env, "device_count": info.world}  # one GPU per rank
    defined = variant_settings(cfg, env["device_type"])
    return {
        "run_id": r.run_id, "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **env, "world_size": info.world,
        "preset": cfg.preset, "variant": cfg.variant, "profile": cfg.profile, "seed": t.seed,
        "status": r.status, "epochs_run": r.epochs_run, "target_acc": t.target_acc,
        "target_epoch": r.target_epoch, "time_to_target_s": r.time_to_target_s,
        "train_time_s": r.train_time_s, "eval_time_s": r.eval_time_s, "warmup_s": r.warmup_s,
        "wall_time_s": r.wall_time_s, "data_wait_s": r.data_wait_s, "final_test_acc": r.final_test_acc,
        "best_test_acc": r.best_test_acc, "images_per_s": r.images_per_s,
        "diverged_epoch": r.diverged_at[0] if r.diverged_at else None,
        "diverged_step": r.diverged_at[1] if r.diverged_at else None, "diverged_reason": r.diverged_reason,
        "pipeline": cfg.data.pipeline, "precision": t.precision, "channels_last": t.channels_last,
        "compile": t.compile, "norm_kernel": cfg.model.norm_kernel,
        "train_images": len(data.train_images), "test_images": len(data.test_images),
        "data_fingerprint": data_fingerprint(data.source) if data.source else "",
        "config_json": cfg.to_json(),
        # what the label means, fixed now: the variant as defined today on this machine (its CPU's bf16 included)
        "label": make_label(cfg.variant, defined, axis_settings(cfg)),
        "variant_settings": json.dumps(defined, sort_keys=True) if defined else "",
    }


def summary_line(cfg: RunConfig, r: RunResult, env: dict[str, Any] | None = None) -> str:
    head = f"[{cfg.preset}/{cfg.variant}/{cfg.profile}] "
    note = commit_note(env.get("git_commit", "")) if env else ""
    if note:
        head += f"({note}) "
    if r.status == "diverged":
        return head + (f"diverged at epoch {r.diverged_at[0]}, step {r.diverged_at[1]} ({r.diverged_reason}): "
                       f"no time to target")
    if r.status == "reached":
        return head + (f"reached {100 * cfg.train.target_acc:.1f}% test accuracy in {r.time_to_target_s:.1f} s "
                       f"of training (epoch {r.target_epoch}); eval {r.eval_time_s:.1f} s, warm-up "
                       f"{r.warmup_s:.1f} s, {r.images_per_s:,.0f} img/s")
    return head + (f"did not reach {100 * cfg.train.target_acc:.1f}% in {r.epochs_run} epochs: best "
                   f"{100 * r.best_test_acc:.2f}%, final {100 * r.final_test_acc:.2f}% after {r.train_time_s:.1f} s "
                   f"of training; {r.images_per_s:,.0f} img/s")
