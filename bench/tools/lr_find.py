"""LR range test (Smith 2015): sweep the LR up over a number of steps, suggest where the loss falls fastest.

The model, BatchNorm statistics and optimizer state are restored exactly afterwards. The suggestion is
the LR at the steepest negative slope of the smoothed loss against log(LR) before its minimum, skipping
the noisy start and end; the sweep stops early once the smoothed loss exceeds `diverge` times its best.
"""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from model.build import autocast

from bench.core.config import ConfigError
from bench.records.results import ENV_COLUMNS


@dataclass
class LRFindResult:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # smoothed (bias-corrected EMA)
    raw_losses: list[float] = field(default_factory=list)
    suggestion: float = math.nan
    min_loss_lr: float = math.nan
    stopped_early: bool = False


def lr_schedule(start: float, end: float, num_iter: int, mode: str) -> np.ndarray:
    if mode == "exp":
        return start * (end / start) ** (np.arange(num_iter) / max(num_iter - 1, 1))
    if mode == "linear":
        return np.linspace(start, end, num_iter)
    raise ValueError(f"mode={mode!r}; choose exp or linear")


def suggest(lrs: list[float], losses: list[float], skip_start: int, skip_end: int) -> float:
    """LR at the steepest descent of the smoothed loss in log-LR, inside [skip_start, len - skip_end) and not
    past the loss minimum: where the loss is bounded (label smoothing, scaled logits) it can fall again after
    blowing up without reaching the divergence threshold, and that fall is not a usable LR."""
    n_min = int(np.argmin(np.asarray(losses))) + 1 if losses else 0
    lo, hi = skip_start, min(len(losses) - skip_end, n_min)
    if hi - lo < 3:
        lo, hi = 0, n_min
    if hi - lo < 3:
        return math.nan
    grad = np.gradient(np.asarray(losses[lo:hi]), np.log(np.asarray(lrs[lo:hi])))
    return float(lrs[lo + int(np.argmin(grad))])


def lr_range_test(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  batches: Iterable[tuple[torch.Tensor, torch.Tensor]], loss_fn: Callable | None = None,
                  start_lr: float = 1e-7, end_lr: float = 10.0, num_iter: int = 200, mode: str = "exp",
                  smooth: float = 0.05, diverge: float = 5.0, skip_start: int = 10, skip_end: int = 5,
                  precision: str = "fp32") -> LRFindResult:
    """Run the sweep on `batches` (a list is cycled, an iterator consumed) and restore model and optimizer state."""
    loss_fn = loss_fn or F.cross_entropy
    model_state = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(optimizer.state_dict())
    device = next(model.parameters()).device
    res = LRFindResult()
    avg, best = 0.0, math.inf
    stream = itertools.cycle(batches) if isinstance(batches, (list, tuple)) else iter(batches)
    try:
        model.train()
        for i, lr in enumerate(lr_schedule(start_lr, end_lr, num_iter, mode)):
            x, y = next(stream)
            for group in optimizer.param_groups:
                group["lr"] = float(lr)
            with autocast(device, precision):
                out = model(x)
            loss = loss_fn(out.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            raw = loss.item()
            avg = (1 - smooth) * avg + smooth * raw
            smoothed = avg / (1 - (1 - smooth) ** (i + 1))
            res.lrs.append(float(lr))
            res.raw_losses.append(raw)
            res.losses.append(smoothed)
            if not math.isfinite(smoothed) or smoothed > diverge * best:
                res.stopped_early = True
                break
            best = min(best, smoothed)
    finally:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(opt_state)
    finite = [(lr, l) for lr, l in zip(res.lrs, res.losses) if math.isfinite(l)]
    if finite:
        res.min_loss_lr = min(finite, key=lambda t: t[1])[0]
        res.suggestion = suggest([t[0] for t in finite], [t[1] for t in finite], skip_start, skip_end)
    return res


def plot(res: LRFindResult, path: Path, title: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(res.lrs, res.raw_losses, color="C0", alpha=0.3, label="loss")
    ax.plot(res.lrs, res.losses, color="C0", label="smoothed loss")
    if math.isfinite(res.suggestion):
        ax.axvline(res.suggestion, color="C3", ls="--", label=f"suggestion {res.suggestion:.2e}")
    if math.isfinite(res.min_loss_lr):
        ax.axvline(res.min_loss_lr, color="grey", ls=":", label=f"min loss {res.min_loss_lr:.2e}")
    finite = [l for l in res.losses if math.isfinite(l)]
    if finite:
        ax.set_ylim(min(finite) * 0.9, min(max(finite), 4 * min(finite)) * 1.1)
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


LR_FIND_COLUMNS = ("timestamp", *ENV_COLUMNS, "preset", "optimizer", "weight_decay", "batch_size", "start_lr", "end_lr",
                   "num_iter", "iterations_run", "mode", "stopped_early", "suggested_lr", "min_loss_lr",
                   "plot", "config_json")


def run_finder(cfg, start_lr: float = 1e-7, end_lr: float = 10.0, num_iter: int = 200, mode: str = "exp",
               write: bool = True) -> LRFindResult:
    """The finder on the run's own pipeline and model (reference settings: Adam, wd 1e-4, 1e-7..10, 200 exp)."""
    from pipeline import load_cifar10, loader_spec, make_loader

    from model.build import build_model
    from bench.core.machine import environment
    from bench.records.results import append_row
    from bench.core.step import make_optimizer
    from bench.core.train import resolve_device

    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.train.seed)
    data = load_cifar10(cfg.data.data_dir or None, device).subset(cfg.data.train_subset, 0)
    t = cfg.train
    spec = loader_spec(cfg, t.batch_size, t.seed)
    loader = make_loader(cfg.data.pipeline, data.train_images, data.train_labels, spec, cfg.data.workers)

    def batches():
        for epoch in itertools.count():
            yield from loader.epoch(epoch)
    model = build_model(cfg.model, device, t.channels_last)
    opt = make_optimizer(model.parameters(), cfg, 1.0)
    res = lr_range_test(model, opt, batches(), start_lr=start_lr, end_lr=end_lr, num_iter=num_iter, mode=mode,
                        precision=t.precision,
                        loss_fn=lambda out, y: F.cross_entropy(out, y, label_smoothing=cfg.optim.label_smoothing))
    if write:
        stamp = datetime.now(timezone.utc)
        png = plot(res, Path(cfg.results_dir) / "plots" / f"lr_find-{stamp:%Y%m%d-%H%M%S}.png",
                   f"LR range test: {cfg.preset}, {cfg.optim.optimizer}, wd {cfg.optim.weight_decay}, batch {t.batch_size}")
        append_row(Path(cfg.results_dir) / "lr_find.csv", {
            "timestamp": stamp.isoformat(timespec="seconds"), **environment(device), "preset": cfg.preset,
            "optimizer": cfg.optim.optimizer, "weight_decay": cfg.optim.weight_decay, "batch_size": t.batch_size,
            "start_lr": start_lr, "end_lr": end_lr, "num_iter": num_iter, "iterations_run": len(res.lrs),
            "mode": mode, "stopped_early": res.stopped_early, "suggested_lr": res.suggestion,
            "min_loss_lr": res.min_loss_lr, "plot": str(png), "config_json": cfg.to_json()}, LR_FIND_COLUMNS)
        print(f"LR range test: {len(res.lrs)} of {num_iter} iterations"
              f"{' (stopped early: loss diverged)' if res.stopped_early else ''}; suggested LR {res.suggestion:.3g}, "
              f"min-loss LR {res.min_loss_lr:.3g}; plot {png}; row appended to {cfg.results_dir}/lr_find.csv")
    return res


def finder_overrides(res: LRFindResult) -> dict[str, str]:
    """Overrides that take lr_max from the finder's suggestion (the start LR stays lr_max / lr_div)."""
    if not math.isfinite(res.suggestion):
        raise ConfigError(f"the LR range test gave no suggestion ({len(res.lrs)} iterations ran before the loss "
                          f"diverged; its row is in lr_find.csv): lower --end-lr or set --lr_max yourself")
    return {"optim.lr_max": repr(res.suggestion),
            "optim.lr_source": f"LR range test at {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, this run"}
