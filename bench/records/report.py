"""A run's report under results/runs/<run_id>/: curves, confusion matrix, misclassified images, samples.

Built from the run's evidence only: epochs.csv, test_predictions.npy (the final model's test predictions)
and the run's row in runs.csv (config, label, data fingerprint); images come from the data set the row's
fingerprint names, never a download. `make report RUN=<run_id>`, and written at the end of every recorded run.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import fields, is_dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline import CIFAR10, CLASSES, MEAN, STD, load_cifar10, loader_spec, make_loader
from pipeline.cifar10 import (RECORDS_PER_FILE, TEST_FILES, DataError, data_fingerprint, default_cache_dir,
                              verify_dir)

from bench.core.config import ConfigError, RunConfig, from_dict
from bench.core.recipes import canonical_preset
from bench.records.labels import row_label
from bench.records.results import ResultsError, atomic_write, write_csv


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> None:
    """The figure as a PNG, replaced in one rename: a report killed mid-way leaves the old figure, never a cut one."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write(Path(path), buf.getvalue())


def confusion(labels: np.ndarray, preds: np.ndarray, k: int = 10) -> np.ndarray:
    """(k, k) counts, rows = true class, columns = predicted."""
    return np.bincount(labels * k + preds, minlength=k * k).reshape(k, k)


def curve_labels(cfg: RunConfig) -> tuple[str, str]:
    """Legend names that say what each curve measures: the training loss is the optimised one (label
    smoothing included); the test curve is the evaluated model (the EMA weights, with TTA)."""
    train = "train" + (f" (label smoothing {cfg.optim.label_smoothing:g})" if cfg.optim.label_smoothing else "")
    how = []
    if cfg.optim.ema_decay:
        how.append(f"EMA {cfg.optim.ema_decay:g}")
    if cfg.train.tta != "none":
        how.append(f"{cfg.train.tta} TTA")
    return train, "test" + (f" ({', '.join(how)})" if how else "")


def _accuracy_lines(ax, x: pd.Series, epochs: pd.DataFrame, labels: tuple[str, str]) -> None:
    ax.plot(x, 100 * epochs["train_acc"], marker="o", label=labels[0])
    ax.plot(x, 100 * epochs["test_acc"], marker="o", label=labels[1])
    for mode in ("flip", "none"):  # what a cheaper TTA scored with the same weights (logged under TTA)
        column = f"test_acc_tta_{mode}"
        if column in epochs and epochs[column].notna().any():
            ax.plot(x, 100 * epochs[column], marker=".", ls="--", label=f"test, TTA {mode}")


def plot_curves(epochs: pd.DataFrame, path: Path, title: str, labels: tuple[str, str] = ("train", "test")):
    """Loss and accuracy per epoch, and accuracy per training second; returns the (closed) figure."""
    from matplotlib.ticker import MaxNLocator
    plt = _plt()
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.2))
    ax1.plot(epochs["epoch"], epochs["train_loss"], marker="o", label=labels[0])
    ax1.plot(epochs["epoch"], epochs["test_loss"], marker="o", label=labels[1])
    ax1.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    _accuracy_lines(ax2, epochs["epoch"], epochs, labels)
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax1, ax2):  # whole epochs only: a 1-epoch run got ticks 0.96 ... 1.04 (min_n_ticks=1 lets one do)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if len(epochs):
            ax.set_xlim(0.5, epochs["epoch"].max() + 0.5)
    # the clock the leaderboard ranks by: cumulative training time, evaluation excluded
    times = epochs["train_time_s"] if "train_time_s" in epochs else pd.Series(dtype=float)
    if times.notna().any():
        _accuracy_lines(ax3, times, epochs, labels)
        ax3.set_xlim(0, 1.05 * times.max())
    else:
        ax3.text(0.5, 0.5, "no train_time_s in this run's epoch log", ha="center", va="center",
                 transform=ax3.transAxes)
    ax3.set(xlabel="training time (s, evaluation excluded)", ylabel="accuracy (%)",
            title="accuracy per training second")
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return fig


def plot_confusion(cm: np.ndarray, path: Path, title: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(10), CLASSES, rotation=45, ha="right")
    ax.set_yticks(range(10), CLASSES)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def tile_origin(k: int, cols: int, h: int = 32, w: int = 32, gap: int = 2, top: int = 0) -> tuple[int, int]:
    """Pixel (row, column) of tile k's top-left corner in a mosaic: where captions and labels are placed too."""
    return (k // cols) * (h + gap + top) + gap + top, (k % cols) * (w + gap) + gap


def mosaic(tiles: list[np.ndarray | None], cols: int, gap: int = 2, top: int = 0) -> np.ndarray:
    """(3, h, w) images in 0-255 (None: a blank) laid out row by row, `cols` per row, on white, with `gap`
    pixels between tiles and `top` more above each row (room for captions): one (H, W, 3) uint8 image, so a grid
    is one imshow, not an axes per image (a figure of 80 axes took 4 s here)."""
    h, w = next(t for t in tiles if t is not None).shape[1:]
    rows = max(1, -(-len(tiles) // cols))
    out = np.full((rows * (h + gap + top) + gap, cols * (w + gap) + gap, 3), 255, np.uint8)
    for k, tile in enumerate(tiles):
        if tile is not None:
            y, x = tile_origin(k, cols, h, w, gap, top)
            out[y:y + h, x:x + w] = np.clip(tile.transpose(1, 2, 0), 0, 255).astype(np.uint8)
    return out


def plot_misclassified(images: torch.Tensor, labels: np.ndarray, preds: np.ndarray, path: Path, title: str,
                       n: int = 25) -> int:
    """A grid of the first `n` wrong test predictions (true / predicted); returns the total number wrong."""
    plt = _plt()
    wrong = np.flatnonzero(labels != preds)
    cols, top = 5, 12  # room above each image for its two caption lines
    rows = max(1, int(np.ceil(min(n, len(wrong)) / cols)))
    fig, ax = plt.subplots(figsize=(cols * 1.9, rows * 2.1))
    tiles = [images[i].numpy() for i in wrong[:n]] or [np.full((3, 32, 32), 255)]  # none wrong: one blank
    ax.imshow(mosaic(tiles, cols, top=top))
    for k, i in enumerate(wrong[:n]):  # each caption just above its image, in the row's `top` pixels
        y, x = tile_origin(k, cols, top=top)
        ax.text(x + 16, y - 1, f"true {CLASSES[labels[i]]}\npred {CLASSES[preds[i]]}", ha="center", va="bottom",
                fontsize=7)
    ax.axis("off")
    fig.suptitle(f"misclassified test images: {len(wrong)} of {len(labels)} wrong (first {min(n, len(wrong))} "
                 f"shown)\n{title}")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return len(wrong)


def plot_samples(cfg: RunConfig, data: CIFAR10, path: Path, title: str, per_class: int = 8) -> None:
    """Training images per class after the run's augmentation (one batch of the device loader, un-normalised)."""
    plt = _plt()
    spec = replace(loader_spec(cfg, min(1024, len(data.train_images)), cfg.train.seed),
                   dtype=torch.float32, channels_last=False)
    x, y = next(make_loader("device", data.train_images.cpu(), data.train_labels.cpu(), spec).epoch(0))
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    pixels = ((x.float() * std + mean) * 255).round().numpy()
    tiles = []
    for c in range(10):
        idx = np.flatnonzero(y.numpy() == c)[:per_class]
        tiles += [pixels[i] for i in idx] + [None] * (per_class - len(idx))
    fig, ax = plt.subplots(figsize=(per_class * 1.1, 10 * 1.2))
    ax.imshow(mosaic(tiles, per_class))
    ax.set_xticks([])
    ax.set_yticks([tile_origin(c * per_class, per_class)[0] + 16 for c in range(10)], CLASSES)  # row middles
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    fig.suptitle(f"training samples after augmentation (crop pad {cfg.aug.crop_padding}, flip {cfg.aug.flip}, "
                 f"cutout {cfg.aug.cutout_size})\n{title}", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def write_report(run_dir: Path, cfg: RunConfig, data: CIFAR10, preds: np.ndarray, label: str | None = None) -> dict:
    """Write every report file into run_dir; returns a summary (accuracy from the confusion matrix, wrong count).
    `label` is the run's row label (`fast+triton`), which every title shows; without it, the config's variant."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    labels = data.test_labels.cpu().numpy()[:len(preds)]
    images = data.test_images.cpu()[:len(preds)]
    epochs = pd.read_csv(run_dir / "epochs.csv")
    title = f"{canonical_preset(cfg.preset)} / {label or cfg.variant} / {cfg.profile} (seed {cfg.train.seed})"
    plot_curves(epochs, run_dir / "curves.png", title, curve_labels(cfg))
    cm = confusion(labels, preds)
    write_csv(run_dir / "confusion.csv", ["true"] + list(CLASSES),
              [{"true": CLASSES[i], **{CLASSES[j]: int(cm[i, j]) for j in range(10)}} for i in range(10)])
    acc = float(np.trace(cm) / cm.sum())
    plot_confusion(cm, run_dir / "confusion.png", f"confusion matrix, test accuracy {100 * acc:.2f}%\n{title}")
    wrong = plot_misclassified(images, labels, preds, run_dir / "misclassified.png", title)
    plot_samples(cfg, data, run_dir / "samples.png", title)
    return {"accuracy": acc, "wrong": wrong, "total": int(cm.sum())}


RUN_HINT = "`make report RUN=<run_id>` reads results/; pass --results-dir=<the folder holding runs.csv> for another"
CURVE_COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc")  # what plot_curves draws


def _run_row(root: Path, run_id: str) -> dict[str, str]:
    """The runs.csv row of `run_id` (read as text: a malformed line elsewhere in the file does not matter here)."""
    csv_path = root / "runs.csv"
    if not root.is_dir():
        raise ResultsError(f"results folder {root} {'is a file, not a folder' if root.exists() else 'does not exist'}:"
                           f" {RUN_HINT}")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.DictReader(f) if r.get("run_id") == run_id]
    except FileNotFoundError:
        raise ResultsError(f"{csv_path} does not exist, so no run is recorded there: {RUN_HINT}") from None
    except IsADirectoryError:
        raise ResultsError(f"{csv_path} is a folder where the runs CSV should be: move it away") from None
    except OSError as e:
        raise ResultsError(f"cannot read {csv_path} ({e.strerror or e}): fix its permissions") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise ResultsError(f"{csv_path} is not readable CSV ({e}): fix or restore the file") from None
    if not rows:
        raise ResultsError(f"run {run_id!r} is not in {csv_path}: pass a run id from its run_id column")
    return rows[-1]


def _run_config(row: dict[str, str], where: str) -> RunConfig:
    """The row's config_json as a RunConfig; any defect names the row and the fix."""
    fix = "fix that cell, or rerun the run"
    text = row.get("config_json") or ""
    if not text.strip():
        raise ResultsError(f"{where} has no config_json: the report needs the run's config; {fix}")
    try:
        d = json.loads(text)
    except ValueError as e:
        raise ResultsError(f"{where}: config_json is not JSON ({e}); {fix}") from None
    if not isinstance(d, dict):
        raise ResultsError(f"{where}: config_json is {type(d).__name__}, not a JSON object of config sections; {fix}")
    known = RunConfig()
    for key, value in d.items():  # from_dict would skip an unknown top-level key and fail on the others
        if key not in {f.name for f in fields(known)}:
            raise ResultsError(f"{where}: config_json has the unknown key {key!r}; {fix} (a row from another version "
                               f"of the harness: build its report at the commit in its git_commit column)")
        section = getattr(known, key)
        if is_dataclass(section):
            if not isinstance(value, dict):
                raise ResultsError(f"{where}: config_json's {key} is {type(value).__name__}, not an object; {fix}")
            unknown = [k for k in value if k not in {f.name for f in fields(section)}]
            if unknown:
                raise ResultsError(f"{where}: config_json has the unknown key {key}.{unknown[0]}; {fix} (a row from "
                                   f"another version of the harness: build its report at the commit in its "
                                   f"git_commit column)")
    try:
        return from_dict(d)
    except ConfigError as e:
        raise ResultsError(f"{where}: config_json holds an invalid value ({e}); {fix}") from None
    except (TypeError, ValueError, AttributeError) as e:  # a value of the wrong type ("epochs": "four")
        raise ResultsError(f"{where}: config_json holds a value of the wrong type ({e}); {fix}") from None


def _predictions(pred_file: Path, expected: int) -> np.ndarray:
    """The run's saved test predictions: `expected` class indices in 0-9, or a refusal naming the defect."""
    rerun = "rerun the run (a run killed while saving leaves this file incomplete)"
    if not pred_file.is_file():
        what = "is a folder, not a file" if pred_file.is_dir() else "is missing"
        raise ResultsError(f"{pred_file} {what}: the run was recorded before reports existed, did not finish, or "
                           f"the file was moved; rerun the run")
    try:
        preds = np.load(pred_file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ResultsError(f"{pred_file} is not a readable .npy array ({str(e) or 'an empty file'}); {rerun}") from None
    if not isinstance(preds, np.ndarray) or preds.ndim != 1 or preds.dtype.kind not in "iu":
        shape = getattr(preds, "shape", "?")
        raise ResultsError(f"{pred_file} holds a {getattr(preds, 'dtype', type(preds).__name__)} array of shape "
                           f"{shape}, not one integer class per test image; {rerun}")
    if len(preds) != expected:
        raise ResultsError(f"{pred_file} has {len(preds):,} predictions, the run's config tests {expected:,} images: "
                           f"it is another run's file or cut short; rerun the run")
    if len(preds) and (preds.min() < 0 or preds.max() >= len(CLASSES)):
        raise ResultsError(f"{pred_file} holds classes outside 0-{len(CLASSES) - 1}; {rerun}")
    return preds.astype(np.int64)


def _epochs(path: Path) -> pd.DataFrame:
    """The run's epoch log with the columns the curves draw, numeric (a log of only a header is a diverged run)."""
    rerun = "rerun the run, or restore the file"
    if not path.is_file():
        raise ResultsError(f"{path} {'is a folder, not a file' if path.is_dir() else 'is missing'}: the report "
                           f"draws the run's curves from it; {rerun}")
    try:
        epochs = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ResultsError(f"{path} is empty (not even a header): {rerun}") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path} is not readable CSV ({e}); {rerun}") from None
    missing = [c for c in CURVE_COLUMNS if c not in epochs.columns]
    if missing:
        raise ResultsError(f"{path} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}: {rerun}")
    for c in CURVE_COLUMNS:  # a log of only a header has object columns and nothing to draw: not a defect
        if len(epochs) and not pd.api.types.is_numeric_dtype(epochs[c]):
            raise ResultsError(f"{path} column {c} holds a non-numeric cell: {rerun}")
    return epochs


SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar-10-batches-bin"  # beside the checkout


def data_places(cfg: RunConfig) -> list[tuple[Path, str]]:
    """Where a run's data set may be, in the order looked, each with its name: the row's data.data_dir,
    $CIFAR10_DIR, the download cache (what an empty data_dir read), the shared copy beside the checkout."""
    places = [(Path(cfg.data.data_dir), "the row's data.data_dir")] if cfg.data.data_dir else []
    if os.environ.get("CIFAR10_DIR"):
        places.append((Path(os.environ["CIFAR10_DIR"]), "CIFAR10_DIR"))
    return places + [(default_cache_dir() / "cifar-10-batches-bin", "the download cache"),
                     (SHARED_DATA, "the shared copy")]


def run_data_dir(row: dict[str, str], cfg: RunConfig, where: str) -> Path:
    """The folder holding the data set the run read: the first place whose data_fingerprint is the row's. A row
    without one (written before rows had it) gets the first place holding the files, and a line saying so.
    Never a download: a report of other bytes than the run's would not be that run's report."""
    wanted = (row.get("data_fingerprint") or "").strip()
    seen = []
    for path, name in data_places(cfg):
        try:
            verify_dir(path)  # sizes only: a folder without the files costs no hashing
            got = data_fingerprint(path) if wanted else ""  # cached MD5s: a second report costs a stat per file
        except DataError:
            seen.append(f"{path} ({name}): {'not a CIFAR-10 folder' if path.exists() else 'does not exist'}")
            continue
        if not wanted:
            print(f"{where} has no data_fingerprint (written before rows had one): reading {path} ({name}), "
                  f"which could not be checksum-matched to the data the run read")
            return path
        if got == wanted:
            return path
        seen.append(f"{path} ({name}): {got}")
    need = f"the data set with fingerprint {wanted}" if wanted else "a data set, and has no data_fingerprint"
    raise ResultsError(f"{where} needs {need}; looked in {'; '.join(seen)}: set CIFAR10_DIR=<folder with "
                       f"cifar-10-batches-bin> holding the data the run read")


def report_for_run(run_id: str, results_dir: str = "results") -> dict:
    """`make report RUN=<run_id>`: rebuild a recorded run's report from its evidence. Every piece of evidence is
    checked before the data set is loaded or a figure written, so a defect costs one line naming it."""
    root = Path(results_dir)
    row = _run_row(root, run_id)
    where = f"run {run_id} in {root / 'runs.csv'}"
    cfg = _run_config(row, where)
    run_dir = root / "runs" / run_id
    if not run_dir.is_dir():
        raise ResultsError(f"{run_dir} {'is a file, not a folder' if run_dir.exists() else 'does not exist'}: the "
                           f"report is built from the run's epochs.csv and test_predictions.npy there; rerun the run")
    test_images = RECORDS_PER_FILE * len(TEST_FILES)
    preds = _predictions(run_dir / "test_predictions.npy", min(cfg.data.test_subset or test_images, test_images))
    _epochs(run_dir / "epochs.csv")
    data_dir = run_data_dir(row, cfg, where)
    data = load_cifar10(data_dir, "cpu").subset(cfg.data.train_subset, cfg.data.test_subset)
    summary = write_report(run_dir, cfg, data, preds, label=row_label(row))  # the row's words, as the leaderboard
    print(f"report for {run_id} in {run_dir}: test accuracy {100 * summary['accuracy']:.2f}%, "
          f"{summary['wrong']} of {summary['total']} test images wrong")
    return summary
