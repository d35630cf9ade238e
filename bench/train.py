"""The one training loop. Every variant (pipeline, precision, layout, compile, kernels) is an input to it.

Clock: `train_time_s` sums the device-synchronised time of each epoch's training steps (data loading
included: it is part of the cost); evaluation after each epoch and the untimed warm-up (compilation)
are timed apart. `time_to_target_s` is the training time up to the end of the first epoch whose test
accuracy reaches the target (plus that epoch's evaluation when test-time augmentation is on).
"""
from __future__ import annotations

import copy
import math
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from model.init import dirac_convs_, whiten_conv_
from model.transforms import DTYPES, autocast, build_model, compile_model
from pipeline import CIFAR10, LoaderSpec, eval_batches, load_cifar10, make_loader

from .config import RunConfig
from .ema import WeightEMA
from .distributed import DistInfo, all_reduce_sum, barrier, init_distributed, shard, wrap_ddp
from .report import write_report
from .results import EPOCH_COLUMNS, append_row, environment, write_csv
from .timer import Timer, synchronize


@dataclass
class RunResult:
    run_id: str
    status: str  # reached | not_reached | diverged
    epochs_run: int
    target_epoch: int | None
    time_to_target_s: float | None
    train_time_s: float
    eval_time_s: float
    warmup_s: float
    wall_time_s: float
    data_wait_s: float
    final_test_acc: float
    best_test_acc: float
    images_per_s: float
    diverged_at: tuple[int, int] | None = None  # (epoch, step), 1-based epoch
    epochs: list[dict[str, Any]] = field(default_factory=list)
    run_dir: Path | None = None
    model: torch.nn.Module | None = field(default=None, repr=False)  # the trained model (DDP/compile-wrapped)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name} was asked for but no CUDA device is visible; use train.device=cpu")
    return device


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def loader_spec(cfg: RunConfig, batch_size: int, seed: int) -> LoaderSpec:
    """What the run's training loader must produce (augmentation, dtype, layout) for one process."""
    return LoaderSpec(batch_size=batch_size, crop_padding=cfg.aug.crop_padding, flip=cfg.aug.flip,
                      flip_alternate=cfg.aug.flip_alternate,
                      cutout_size=cfg.aug.cutout_size, cutout_prob=cfg.aug.cutout_prob, cutout_clip=cfg.aug.cutout_clip,
                      drop_last=cfg.data.drop_last, seed=seed, dtype=DTYPES[cfg.train.precision],
                      channels_last=cfg.train.channels_last)


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters the optimiser updates (frozen ones, e.g. a whitened first conv, are left out)."""
    return [p for p in model.parameters() if p.requires_grad]


def init_model(model: torch.nn.Module, cfg: RunConfig) -> None:
    """Data-free initialisations and freezing of the recipe (before warm-up and the clock)."""
    if cfg.init.dirac:
        dirac_convs_(model, skip=model.prep)
    if cfg.init.whiten and cfg.init.whiten_frozen:
        model.prep[0].weight.requires_grad_(False)


def init_from_data(model: torch.nn.Module, cfg: RunConfig, data: CIFAR10) -> None:
    """Initialisations that look at the training images; they are training, so they run on the clock."""
    if cfg.init.whiten:
        images = data.train_images[:cfg.init.whiten_images]  # the same first images on every rank
        x = torch.cat([x for x, _ in eval_batches(images, images, 1000, torch.float32, False)])
        whiten_conv_(model.prep[0], x, cfg.init.whiten_eps)


def make_optimizer(params, cfg: RunConfig, steps_per_epoch: int):
    """Optimizer and the one-cycle schedule (per step) from the config."""
    o = cfg.optim
    if o.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=o.lr_max / o.lr_div, weight_decay=o.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=o.lr_max / o.lr_div, momentum=o.momentum, nesterov=True,
                              weight_decay=o.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=o.lr_max, total_steps=cfg.train.epochs * steps_per_epoch, pct_start=o.pct_start,
        anneal_strategy=o.anneal, div_factor=o.lr_div, final_div_factor=o.final_div,
        cycle_momentum=False, three_phase=False)
    return opt, sched


@torch.no_grad()
def evaluate(model, images: torch.Tensor, labels: torch.Tensor, cfg: RunConfig, device: torch.device,
             info: DistInfo = DistInfo()) -> tuple[float, float, torch.Tensor]:
    """Test loss and accuracy over the whole split (each rank evaluates its share, sums are all-reduced),
    and this rank's predicted classes."""
    model.eval()
    part = slice(info.rank, None, info.world)
    images, labels = images[part], labels[part]
    sums = torch.zeros(3, device=device, dtype=torch.float64)  # loss sum, correct, count
    preds = []
    for x, y in eval_batches(images, labels, cfg.train.eval_batch_size, DTYPES[cfg.train.precision],
                             cfg.train.channels_last):
        with autocast(device, cfg.train.precision):
            logits = sum(model(v).float() for v in tta_views(x, cfg.train.tta))
        p = logits.argmax(1)
        sums += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(), (p == y).sum().double(),
                             torch.tensor(float(len(y)), device=device, dtype=torch.float64)])
        preds.append(p)
    loss_sum, correct, n = all_reduce_sum(sums, info).tolist()
    return loss_sum / n, correct / n, torch.cat(preds)


def tta_views(x: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """The test-time views whose logits are summed: the image, its mirror, and +-1 pixel translations of both."""
    if tta == "none":
        return [x]
    views = [x, x.flip(3)]
    if tta == "flip_translate":
        pad = F.pad(x, (1, 1, 1, 1))  # zero = the mean after normalisation
        h, w = x.shape[2:]
        views += [v.flip(3) if i else v for v in (pad[..., :h, :w], pad[..., 2:, 2:]) for i in (0, 1)]
    return views


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under torch.compile and DDP wrappers."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def train_step(model, opt, sched, scaler, x, y, cfg: RunConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step; returns (loss, correct count) as device tensors (no sync)."""
    with autocast(device, cfg.train.precision):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.optim.label_smoothing)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    if sched is not None:
        sched.step()
    return loss.detach(), (logits.detach().argmax(1) == y).sum()


def warm_up(model, cfg: RunConfig, data: CIFAR10, device: torch.device, batch_size: int) -> float:
    """Untimed steps (compilation, autotuning) on real images, then weights and BN statistics restored."""
    if cfg.train.warmup_steps == 0:
        return 0.0
    t0 = time.perf_counter()
    state = copy.deepcopy(model.state_dict())
    opt, _ = make_optimizer(model.parameters(), cfg, 1)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.precision == "fp16")
    bs = min(batch_size, len(data.train_images))  # this rank's batch: the shape the timed steps will have
    x, y = next(eval_batches(data.train_images[:bs], data.train_labels[:bs], bs, DTYPES[cfg.train.precision],
                             cfg.train.channels_last))
    model.train()
    for _ in range(cfg.train.warmup_steps):
        train_step(model, opt, None, scaler, x, y, cfg, device)
    evaluate(model, data.test_images[:cfg.train.eval_batch_size], data.test_labels[:cfg.train.eval_batch_size],
             cfg, device)
    model.load_state_dict(state)
    synchronize(device)
    return time.perf_counter() - t0


def _first_nonfinite(losses: torch.Tensor) -> int | None:
    bad = ~torch.isfinite(losses)
    return int(bad.nonzero()[0, 0]) if bool(bad.any()) else None


def train(cfg: RunConfig, data: CIFAR10 | None = None, write: bool = True, quiet: bool = False,
          on_epoch: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
    """Train `cfg` once and (when `write`) record its row in <results_dir>/runs.csv and its epoch log.

    Under torchrun (WORLD_SIZE > 1) every rank runs this same loop on its shard with the global batch
    split evenly; rank 0 alone prints and writes.
    """
    wall0 = time.perf_counter()
    info, dist_device = init_distributed(cfg.train.device)
    device = dist_device or resolve_device(cfg.train.device)
    quiet, write = quiet or not info.is_main, write and info.is_main
    env = environment(device)  # at the start: the commit that runs, not the one checked out when it ends
    t = cfg.train
    if t.batch_size % info.world:
        raise ValueError(f"train.batch_size={t.batch_size} does not split evenly over {info.world} ranks; "
                         f"use a multiple of {info.world}")
    torch.manual_seed(t.seed)
    if data is None:
        data = load_cifar10(cfg.data.data_dir or None, device)
    data = data.to(device).subset(cfg.data.train_subset, cfg.data.test_subset)
    part = shard(len(data.train_images), info)
    spec = loader_spec(cfg, t.batch_size // info.world, t.seed + 7919 * info.rank)
    loader = make_loader(cfg.data.pipeline, data.train_images[part], data.train_labels[part], spec, cfg.data.workers)
    if len(loader) == 0:
        raise ValueError(f"{len(data.train_images)} training images make no batch of {t.batch_size} with "
                         f"drop_last; lower train.batch_size or set data.drop_last=false")
    model = build_model(cfg.model, device, t.channels_last)
    init_model(model, cfg)
    plain = model
    model = compile_model(wrap_ddp(model, info, device, t.sync_bn), t.compile)
    warmup_s = warm_up(model, cfg, data, device, spec.batch_size)
    opt, sched = make_optimizer(trainable(model), cfg, len(loader))
    scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16")

    run_id = new_run_id()
    run_dir = Path(cfg.results_dir) / "runs" / run_id
    timer = Timer(device)
    epochs: list[dict[str, Any]] = []
    train_time = eval_time = data_wait = 0.0
    target_epoch = time_to_target = diverged = None
    check_every = 1 if device.type == "cpu" else 8  # a finiteness check syncs the device (and the ranks)
    n_epoch = len(loader) * spec.batch_size * info.world if cfg.data.drop_last else len(data.train_images)
    for epoch in range(1, t.epochs + 1):
        model.train()
        lr = sched.get_last_lr()[0]
        losses: list[torch.Tensor] = []
        correct = torch.zeros((), device=device, dtype=torch.long)
        bar = tqdm(total=len(loader), desc=f"epoch {epoch}/{t.epochs}", leave=False, disable=quiet or None)
        barrier(info)
        timer.start()
        if epoch == 1:
            init_from_data(plain, cfg, data)
            # evaluated in place of the weights; BN statistics averaged too
            ema = WeightEMA(plain, cfg.optim.ema_decay, cfg.optim.ema_every) if cfg.optim.ema_decay else None
        it = iter(loader.epoch(epoch - 1))
        for step in range(len(loader)):
            t_fetch = time.perf_counter()
            x, y = next(it)
            data_wait += time.perf_counter() - t_fetch
            loss, hits = train_step(model, opt, sched, scaler, x, y, cfg, device)
            if ema is not None:
                ema.update((epoch - 1) * len(loader) + step)
            losses.append(loss)
            correct += hits
            if (step + 1) % check_every == 0 or step + 1 == len(loader):
                window = all_reduce_sum(torch.stack(losses[-check_every:]), info)  # NaN on any rank shows on all
                bad = _first_nonfinite(window)
                if bad is not None:
                    diverged = (epoch, step + 1 - len(window) + bad + 1)
                    break
                bar.set_postfix(loss=f"{window[-1].item() / info.world:.3f}")
            bar.update(1)
        barrier(info)
        epoch_s = timer.stop()
        bar.close()
        train_time += epoch_s
        if diverged:
            if not quiet:
                print(f"diverged: non-finite loss at epoch {diverged[0]}, step {diverged[1]}")
            break
        t_eval = Timer(device)
        t_eval.start()
        test_loss, test_acc, preds = evaluate(ema.module if ema else model, data.test_images, data.test_labels, cfg, device, info)
        eval_s = t_eval.stop()
        eval_time += eval_s
        sums = all_reduce_sum(torch.stack([torch.stack(losses).mean().double(), correct.double()]), info).tolist()
        row = {"epoch": epoch, "lr": lr, "train_loss": sums[0] / info.world, "train_acc": sums[1] / n_epoch,
               "test_loss": test_loss, "test_acc": test_acc, "epoch_time_s": epoch_s, "train_time_s": train_time,
               "eval_time_s": eval_s}
        epochs.append(row)
        if write:
            write_csv(run_dir / "epochs.csv", EPOCH_COLUMNS, epochs)
        if on_epoch:
            on_epoch(row)
        if not quiet:
            print(f"epoch {epoch:2d}  lr {lr:.2e}  train loss {row['train_loss']:.3f} acc {row['train_acc']:.4f}  "
                  f"test loss {test_loss:.3f} acc {test_acc:.4f}  {epoch_s:6.1f} s  "
                  f"({n_epoch / epoch_s:,.0f} img/s)  total {train_time:7.1f} s", flush=True)
        if target_epoch is None and test_acc >= t.target_acc:  # test_acc is all-reduced: every rank agrees
            # with TTA the evaluation is part of the method, so the deciding evaluation is on the clock
            target_epoch, time_to_target = epoch, train_time + (eval_s if t.tta != "none" else 0.0)
            if t.stop_at_target:
                break

    accs = [e["test_acc"] for e in epochs]
    steps_done = sum(len(loader) for _ in epochs) + (diverged[1] if diverged else 0)
    result = RunResult(
        run_id=run_id, status="diverged" if diverged else ("reached" if target_epoch else "not_reached"),
        epochs_run=len(epochs) + (1 if diverged else 0), target_epoch=None if diverged else target_epoch,
        time_to_target_s=None if diverged else time_to_target, train_time_s=train_time, eval_time_s=eval_time,
        warmup_s=warmup_s, wall_time_s=time.perf_counter() - wall0, data_wait_s=data_wait,
        final_test_acc=accs[-1] if accs else math.nan, best_test_acc=max(accs) if accs else math.nan,
        images_per_s=steps_done * spec.batch_size * info.world / train_time if train_time else 0.0,
        diverged_at=diverged, epochs=epochs, run_dir=run_dir if write else None, model=model)
    if write:
        if not diverged and not info.enabled:  # the report needs every test prediction in one process
            np.save(run_dir / "test_predictions.npy", preds.cpu().numpy().astype(np.uint8))
            write_report(run_dir, cfg, data, preds.cpu().numpy())
        append_row(Path(cfg.results_dir) / "runs.csv", result_row(cfg, result, env, data, info))
    if not quiet:
        print(summary_line(cfg, result))
        if write:
            print(f"row appended to {cfg.results_dir}/runs.csv (run {run_id}); epoch log in {run_dir}/epochs.csv")
    return result


def result_row(cfg: RunConfig, r: RunResult, env: dict[str, Any], data: CIFAR10,
               info: DistInfo = DistInfo()) -> dict[str, Any]:
    """The CSV row of a finished run: environment (taken when it started), outcome, variant axes, full config."""
    t = cfg.train
    if info.enabled and env["device_type"] == "cuda":
        env = {**env, "device_count": info.world}  # one GPU per rank
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
        "diverged_step": r.diverged_at[1] if r.diverged_at else None,
        "pipeline": cfg.data.pipeline, "precision": t.precision, "channels_last": t.channels_last,
        "compile": t.compile, "norm_kernel": cfg.model.norm_kernel,
        "train_images": len(data.train_images), "test_images": len(data.test_images),
        "config_json": cfg.to_json(),
    }


def summary_line(cfg: RunConfig, r: RunResult) -> str:
    head = f"[{cfg.preset}/{cfg.variant}/{cfg.profile}] "
    if r.status == "diverged":
        return head + f"diverged at epoch {r.diverged_at[0]}, step {r.diverged_at[1]}: no time to target"
    if r.status == "reached":
        return head + (f"reached {100 * cfg.train.target_acc:.1f}% test accuracy in {r.time_to_target_s:.1f} s "
                       f"of training (epoch {r.target_epoch}); eval {r.eval_time_s:.1f} s, warm-up "
                       f"{r.warmup_s:.1f} s, {r.images_per_s:,.0f} img/s")
    return head + (f"did not reach {100 * cfg.train.target_acc:.1f}% in {r.epochs_run} epochs: best "
                   f"{100 * r.best_test_acc:.2f}%, final {100 * r.final_test_acc:.2f}% after {r.train_time_s:.1f} s "
                   f"of training; {r.images_per_s:,.0f} img/s")
