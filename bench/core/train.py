"""The one training loop. Every variant (pipeline, precision, layout, compile, kernels) is an input to it.

Read top to bottom: `setup_run` (data, loader, model, step, warm-up), `run_epoch` (the timed steps, then one host
read of the epoch's record), `fit` (epochs, evaluation, the target). Recording a run (epoch and step logs, the row,
the report) is bench/run.py's, through `fit`'s callbacks and its result: the loop writes no file. Inside an epoch
nothing reads a tensor back to the host (bench/core/step.py); divergence is judged at its end.

Clock: `train_time_s` sums the device-synchronised time of each epoch's training steps (data loading and
augmentation included: they are part of the cost; so is a data-dependent initialisation such as whitening, in epoch
1). Evaluation after each epoch and the untimed warm-up (compilation) are timed apart. `time_to_target_s` is the
training time up to the end of the first epoch whose test accuracy reaches the target (plus that epoch's
evaluation when test-time augmentation is on).
"""
from __future__ import annotations

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

from model.initialise import dirac_convs_, freeze_norm_scales_, whiten_conv_
from model.build import DTYPES, autocast, build_model, compile_model
from pipeline import CIFAR10, eval_batches, load_cifar10, loader_spec, make_loader
from pipeline.augment import keep_layout

from bench.core.config import TTA_MODES, RunConfig
from bench.core.distributed import DistInfo, all_reduce_sum, barrier, init_distributed, shard, wrap_ddp
from bench.core.ema import WeightEMA
from bench.core.machine import default_device_type, environment
from bench.core.progress import Progress
from bench.core.step import TrainStep
from bench.core.timer import Timer, synchronize

LOSS_BOUND = 100.0  # a step's loss above this many times the run's first loss is divergence, finite or not


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
    diverged_at: tuple[int, int] | None = None  # (epoch, step), 1-based both
    diverged_reason: str = ""
    late_graphs: int = 0  # graphs compiled after the warm-up, i.e. on the clock (0 is the aim)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    run_dir: Path | None = None
    model: torch.nn.Module | None = field(default=None, repr=False)  # the trained model (DDP/compile-wrapped)
    preds: np.ndarray | None = field(default=None, repr=False)  # last evaluation's test predictions (one process)
    env: dict[str, Any] = field(default_factory=dict, repr=False)  # environment stamp taken at the start
    info: DistInfo = field(default_factory=DistInfo, repr=False)
    data: CIFAR10 | None = field(default=None, repr=False)  # the splits the run used (subsets applied)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device(default_device_type())
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name} was asked for but no CUDA device is visible; use train.device=cpu")
    return device


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def init_model(model: torch.nn.Module, cfg: RunConfig) -> None:
    """Data-free initialisations and freezing of the recipe (before warm-up and the clock)."""
    if cfg.init.dirac:
        dirac_convs_(model, skip=model.prep)
    if cfg.init.whiten and cfg.init.whiten_frozen:
        model.prep[0].weight.requires_grad_(False)
    if cfg.optim.norm_scale_frozen:
        freeze_norm_scales_(model)


def init_from_data(model: torch.nn.Module, cfg: RunConfig, data: CIFAR10) -> None:
    """Initialisations that look at the training images; they are training, so they run on the clock."""
    if cfg.init.whiten:
        images = data.train_images[:cfg.init.whiten_images]  # the same first images on every rank
        x = torch.cat([x for x, _ in eval_batches(images, images, 1000, torch.float32, False)])
        whiten_conv_(model.prep[0], x, cfg.init.whiten_eps)


TTA_VIEWS = {"none": 1, "flip": 2, "flip_translate": 6}  # views per mode (tta_views); each extends the last


@torch.no_grad()
def evaluate(model, images: torch.Tensor, labels: torch.Tensor, cfg: RunConfig, device: torch.device,
             info: DistInfo = DistInfo()) -> tuple[float, float, torch.Tensor, dict[str, float]]:
    """Test loss and accuracy over the whole split (each rank evaluates its share, sums are all-reduced),
    this rank's predicted classes, and the accuracy each cheaper TTA mode would have scored: its views are the
    first ones of the configured mode's, so {"none": .., "flip": ..} come from the same forward passes at
    the cost of an argmax. One host read, at the end."""
    model.eval()
    n = len(images)  # all ranks' shares together
    part = slice(info.rank, None, info.world)
    images, labels = images[part], labels[part]
    cheaper = TTA_MODES[:TTA_MODES.index(cfg.train.tta)]
    complete = {TTA_VIEWS[m] for m in cheaper}
    sums = torch.zeros(2 + len(cheaper), device=device, dtype=torch.float64)  # loss sum, correct, per cheaper mode
    preds = []
    for x, y in eval_batches(images, labels, cfg.train.eval_batch_size, DTYPES[cfg.train.precision],
                             cfg.train.channels_last):
        logits, hits = 0, []
        for n_views, v in enumerate(tta_views(x, cfg.train.tta), 1):
            with autocast(device, cfg.train.precision):
                logits = logits + model(v).float()
            if n_views in complete:  # a cheaper mode's views are all in: score it (in TTA_MODES order)
                hits.append((logits.argmax(1) == y).sum().double())
        p = logits.argmax(1)
        sums += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(), (p == y).sum().double(), *hits])
        preds.append(p)
    loss_sum, correct, *cheaper_correct = all_reduce_sum(sums, info).tolist()
    return loss_sum / n, correct / n, torch.cat(preds), {m: c / n for m, c in zip(cheaper, cheaper_correct)}


def tta_views(x: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """The test-time views whose logits are summed: the image, its mirror, and +-1 pixel translations of both.
    Every view is dense in the input's layout, so one compiled graph per batch size serves them all (a crop of
    the padded image would otherwise carry the padded strides)."""
    if tta == "none":
        return [x]
    views = [x, x.flip(3)]
    if tta == "flip_translate":
        pad = F.pad(x, (1, 1, 1, 1))  # zero = the mean after normalisation
        h, w = x.shape[2:]
        views += [v.flip(3) if i else v for v in (pad[..., :h, :w], pad[..., 2:, 2:]) for i in (0, 1)]
    return [keep_layout(v, x) for v in views]


@dataclass
class Run:
    """What `setup_run` built and the loop carries from epoch to epoch."""
    cfg: RunConfig
    info: DistInfo
    env: dict[str, Any]
    device: torch.device
    data: CIFAR10
    loader: Any
    batch_size: int  # this rank's
    model: torch.nn.Module  # DDP-wrapped where distributed; the step compiles around it
    plain: torch.nn.Module  # the CustomResNet itself
    step: TrainStep
    eval_model: torch.nn.Module  # the EMA copy (or the model), compiled like the step
    warmup_s: float
    quiet: bool
    images_per_epoch: int
    data_wait_s: float = 0.0
    first_loss: float | None = None
    warmup_graphs: int = 0  # compiled_graphs() when the warm-up ended


def setup_run(cfg: RunConfig, data: CIFAR10 | None = None, quiet: bool = False) -> Run:
    """Data, loader, model, step and warm-up: everything before the clock starts."""
    info, dist_device = init_distributed(cfg.train.device)
    device = dist_device or resolve_device(cfg.train.device)
    # at the start: the commit that runs, not the one checked out when it ends; one GPU per rank
    env = environment(device, info.world if device.type == "cuda" else 1)
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
    plain = build_model(cfg.model, device, t.channels_last)
    init_model(plain, cfg)
    model = wrap_ddp(plain, info, device, t.sync_bn)
    # evaluated in place of the weights; BN statistics averaged too
    ema = WeightEMA(plain, cfg.optim.ema_decay, cfg.optim.ema_every) if cfg.optim.ema_decay else None
    step = TrainStep(model, cfg, device, len(loader), t.epochs * len(loader), ema)
    eval_model = compile_model(ema.module if ema else model, t.compile)
    images_per_epoch = len(loader) * spec.batch_size * info.world if cfg.data.drop_last else len(data.train_images)
    run = Run(cfg, info, env, device, data, loader, spec.batch_size, model, plain, step, eval_model, 0.0,
              quiet or not info.is_main, images_per_epoch)
    run.warmup_s = warm_up(run)
    return run


def warm_up(run: Run) -> float:
    """Untimed steps and evaluations (compilation, autotuning, CUDA-graph capture) at every shape the run uses;
    then weights, BN statistics, optimizer state and counters go back to where they were."""
    cfg = run.cfg
    if cfg.train.warmup_steps == 0:
        return 0.0
    graphs0 = compiled_graphs()
    t0 = time.perf_counter()
    state = {k: v.clone() for k, v in run.plain.state_dict().items()}
    x, y = next(iter(run.loader.epoch(0)))  # the timed steps' shape, dtype and layout
    run.model.train()
    # the step's buffers (LR schedule, per-epoch losses) hold one epoch at least: a warm-up longer than an epoch
    # would index past them, and needs no more steps than the run will take
    steps = min(cfg.train.warmup_steps, len(run.loader))
    if steps < cfg.train.warmup_steps and not run.quiet:
        print(f"warm-up: {steps} of train.warmup_steps={cfg.train.warmup_steps} steps (an epoch has {steps})",
              flush=True)
    for _ in range(steps):
        run.step.step(x, y)
    bs, n = cfg.train.eval_batch_size, len(run.data.test_images)
    m = bs + n % bs if n > bs else n  # a full evaluation batch and the last, smaller one
    evaluate(run.eval_model, run.data.test_images[:m], run.data.test_labels[:m], cfg, run.device)
    run.plain.load_state_dict(state)
    run.step.reset()
    synchronize(run.device)
    seconds = time.perf_counter() - t0
    run.warmup_graphs = compiled_graphs()
    if not run.quiet:
        print(f"warm-up: {run.warmup_graphs - graphs0} graphs compiled in {seconds:.1f} s", flush=True)
    return seconds


def compiled_graphs() -> int:
    """Graphs Dynamo has compiled in this process so far (what a recompile after the warm-up would raise)."""
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def first_divergence(losses: list[float], first_loss: float) -> tuple[int | None, str]:
    """(1-based step, rule) of the first step whose loss is non-finite or above LOSS_BOUND x the run's first
    loss; (None, "") when every step is fine."""
    bound = LOSS_BOUND * abs(first_loss) if math.isfinite(first_loss) else math.inf
    for j, loss in enumerate(losses):
        if not math.isfinite(loss):
            return j + 1, "non-finite loss"
        if loss > bound:
            return j + 1, f"loss {loss:.3g} above {LOSS_BOUND:g}x the first step's {first_loss:.3g}"
    return None, ""


@dataclass
class EpochOutcome:
    seconds: float
    train_loss: float = math.nan
    train_acc: float = math.nan
    lr: float = math.nan
    diverged_step: int | None = None  # 1-based step within the epoch
    diverged_reason: str = ""
    losses: list[float] = field(default_factory=list)  # every step's, as read to the host (the mean over ranks)


def run_epoch(run: Run, epoch: int, steps_only: bool = False) -> EpochOutcome | None:
    """Epoch `epoch` (1-based) of timed steps; no host read until its last step is queued."""
    cfg, info, step = run.cfg, run.info, run.step
    run.model.train()
    step.new_epoch()
    lr = step.lr_values[(epoch - 1) * len(run.loader)]
    progress = Progress(len(run.loader), f"epoch {epoch}/{cfg.train.epochs}", enabled=not run.quiet)
    barrier(info)
    timer = Timer(run.device)
    timer.start()
    if epoch == 1:
        init_from_data(run.plain, cfg, run.data)
    it = iter(run.loader.epoch(epoch - 1))
    for j in range(len(run.loader)):
        t_fetch = time.perf_counter()
        x, y = next(it)
        run.data_wait_s += time.perf_counter() - t_fetch
        step.step(x, y)
        progress.update(j + 1)
    barrier(info)
    seconds = timer.stop()
    progress.close()
    if steps_only:
        return None
    # the epoch's one host read: every step's loss (summed over ranks: a NaN on any rank shows on all)
    losses = (all_reduce_sum(step.losses.double(), info) / info.world).tolist()
    correct = all_reduce_sum(step.correct.double(), info).item()
    if run.first_loss is None:
        run.first_loss = losses[0]
    out = EpochOutcome(seconds, sum(losses) / len(losses), correct / run.images_per_epoch, lr, losses=losses)
    out.diverged_step, out.diverged_reason = first_divergence(losses, run.first_loss)
    return out


def step_rows(epoch: int, lr_values: list[float], losses: list[float]) -> list[dict[str, Any]]:
    """Rows of epoch `epoch` (1-based): `lr_values` is the whole run's schedule, `losses` this epoch's steps."""
    first = (epoch - 1) * len(losses)  # every epoch has the same number of steps
    return [{"epoch": epoch, "step": first + j + 1, "lr": lr_values[first + j], "loss": loss}
            for j, loss in enumerate(losses)]


def fit(cfg: RunConfig, data: CIFAR10 | None = None, quiet: bool = False,
        on_epoch: Callable[[list[dict[str, Any]]], None] | None = None, run_id: str | None = None,
        on_steps: Callable[[list[dict[str, Any]]], None] | None = None) -> RunResult:
    """Train `cfg` once: epochs until the target (when `stop_at_target`), the schedule's end, or divergence.

    Under torchrun (WORLD_SIZE > 1) every rank runs this same loop on its shard with the global batch split
    evenly; rank 0 alone prints. `on_epoch(epochs)` gets the epoch log after every evaluated epoch;
    `on_steps(rows)` each epoch's steps (bench/records/steplog.py), a diverged epoch's included.
    """
    wall0 = time.perf_counter()
    run = setup_run(cfg, data, quiet)
    t, info, device = cfg.train, run.info, run.device
    epochs: list[dict[str, Any]] = []
    train_time = eval_time = 0.0
    target_epoch = time_to_target = diverged = None
    reason, preds = "", None
    for epoch in range(1, t.epochs + 1):
        out = run_epoch(run, epoch)
        train_time += out.seconds
        if on_steps:
            on_steps(step_rows(epoch, run.step.lr_values, out.losses))
        if out.diverged_step:
            diverged, reason = (epoch, out.diverged_step), out.diverged_reason
            if not run.quiet:
                print(f"diverged: {reason} at epoch {epoch}, step {out.diverged_step}")
            break
        test_loss = test_acc = None
        eval_s, cheaper = 0.0, {}
        if epoch >= min(t.eval_from, t.epochs):  # the last epoch is always evaluated
            t_eval = Timer(device)
            t_eval.start()
            test_loss, test_acc, preds, cheaper = evaluate(run.eval_model, run.data.test_images,
                                                           run.data.test_labels, cfg, device, info)
            eval_s = t_eval.stop()
            eval_time += eval_s
        row = {"epoch": epoch, "lr": out.lr, "train_loss": out.train_loss, "train_acc": out.train_acc,
               "test_loss": test_loss, "test_acc": test_acc, "epoch_time_s": out.seconds, "train_time_s": train_time,
               "eval_time_s": eval_s, **{f"test_acc_tta_{m}": a for m, a in cheaper.items()}}
        epochs.append(row)
        if on_epoch:
            on_epoch(epochs)
        if not run.quiet:
            test = f"test loss {test_loss:.3f} acc {test_acc:.4f}" if test_acc is not None else "not evaluated"
            print(f"epoch {epoch:2d}  lr {out.lr:.2e}  train loss {out.train_loss:.3f} acc {out.train_acc:.4f}  "
                  f"{test}  {out.seconds:6.1f} s  "
                  f"({run.images_per_epoch / out.seconds:,.0f} img/s)  total {train_time:7.1f} s", flush=True)
        if target_epoch is None and test_acc is not None and test_acc >= t.target_acc:  # all-reduced: ranks agree
            # with TTA the evaluation is part of the method, so the deciding evaluation is on the clock
            target_epoch, time_to_target = epoch, train_time + (eval_s if t.tta != "none" else 0.0)
            if t.stop_at_target:
                break

    accs = [e["test_acc"] for e in epochs if e["test_acc"] is not None]
    late = compiled_graphs() - run.warmup_graphs if t.compile != "off" and t.warmup_steps else 0
    if late and not run.quiet:
        print(f"note: {late} graphs were compiled after the warm-up, on the clock", flush=True)
    epochs_run = len(epochs) + (1 if diverged else 0)
    return RunResult(
        run_id=run_id or new_run_id(), status="diverged" if diverged else ("reached" if target_epoch else "not_reached"),
        epochs_run=epochs_run, target_epoch=None if diverged else target_epoch,
        time_to_target_s=None if diverged else time_to_target, train_time_s=train_time, eval_time_s=eval_time,
        warmup_s=run.warmup_s, wall_time_s=time.perf_counter() - wall0, data_wait_s=run.data_wait_s,
        final_test_acc=accs[-1] if accs else math.nan, best_test_acc=max(accs) if accs else math.nan,
        # images_per_epoch counts a partial last batch's own images, not a full batch
        images_per_s=epochs_run * run.images_per_epoch / train_time if train_time else 0.0,
        diverged_at=diverged, diverged_reason=reason, late_graphs=late, epochs=epochs, model=run.model,
        preds=None if diverged or info.enabled or preds is None else preds.cpu().numpy().astype(np.uint8),
        env=run.env, info=info, data=run.data)
