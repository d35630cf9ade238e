"""The training step as one function of (batch, device state): nothing in it reads a tensor back to the host.

State on the device: the LR schedule precomputed for every step (`one_cycle_lrs`, equal to OneCycleLR's), the live
LR the fused optimizer reads (a 0-dim tensor), the step and in-epoch counters, the per-step loss buffer and the
correct-prediction count. `TrainStep` runs forward, loss, backward, optimizer update and bookkeeping; with
`train.compile` other than `off` the whole step function goes through torch.compile (the backward splits it into a
forward graph and an update graph; `reduce-overhead`/`max-autotune` replay both as CUDA graphs). The weights' EMA
(`bench.core.ema.WeightEMA`) is applied every k steps from a host counter.

`PlainStep` is the previous step (Python-float LR from OneCycleLR, per-step AveragedModel, loss and accuracy
outside any graph, and its own loss, groups and optimizers, not TrainStep's helpers): the reference the tests and
`step-bench` compare against; training never uses it.
"""
from __future__ import annotations

import inspect
import os
from typing import Callable

import torch
import torch.nn.functional as F

from model.initialise import NORM_LAYERS
from model.build import autocast

from bench.core.config import ConfigError, RunConfig
from bench.core.ema import WeightEMA
from bench.core.muon import FilterMuon


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters the optimiser updates (frozen ones, e.g. a whitened first conv, are left out)."""
    return [p for p in model.parameters() if p.requires_grad]


def norm_biases(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The norm layers' trainable biases (the shifts after normalisation)."""
    return [m.bias for m in model.modules()
            if isinstance(m, NORM_LAYERS) and m.bias is not None and m.bias.requires_grad]


def muon_filters(model: torch.nn.Module, cfg: RunConfig) -> list[torch.nn.Parameter]:
    """The trainable conv filters (4-D) when `optim.muon_lr` > 0: Muon's, not the main optimiser's."""
    return [p for p in trainable(model) if p.ndim == 4] if cfg.optim.muon_lr else []


def param_groups(model: torch.nn.Module, cfg: RunConfig) -> list[dict]:
    """The main optimiser's groups: the trainable parameters less Muon's filters, with the norm biases in a group
    of their own when `optim.norm_bias_lr_scale` != 1 (LR x scale, weight decay / scale: Page's ResNet-9, airbench
    use 64). Each group's `lr_scale` multiplies the schedule's LR."""
    scale = cfg.optim.norm_bias_lr_scale
    biases = {id(p) for p in norm_biases(model)} if scale != 1 else set()
    filters = {id(p) for p in muon_filters(model, cfg)}
    rest = [p for p in trainable(model) if id(p) not in filters]
    groups = [{"params": [p for p in rest if id(p) not in biases], "lr_scale": 1.0}]
    if biases:
        groups.append({"params": [p for p in rest if id(p) in biases], "lr_scale": scale,
                       "weight_decay": cfg.optim.weight_decay / scale})
    return groups


def make_muon(model: torch.nn.Module, cfg: RunConfig, lr: float | torch.Tensor) -> FilterMuon | None:
    """Muon over the conv filters (`optim.muon_lr` > 0; its group's `lr_scale` = muon_lr / lr_max), else None. Its
    Newton-Schulz runs in bf16 when the step does (bf16, fp16), else in the filters' dtype (bench/core/muon.py: why)."""
    filters, o = muon_filters(model, cfg), cfg.optim
    if not filters:
        return None
    ns_dtype = None if cfg.train.precision == "fp32" else torch.bfloat16
    muon = FilterMuon(filters, lr, o.muon_momentum, o.muon_ns_steps, ns_dtype)
    muon.param_groups[0]["lr_scale"] = o.muon_lr / o.lr_max
    return muon


def one_cycle(opt: torch.optim.Optimizer, cfg: RunConfig, total_steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """The config's one-cycle schedule over `total_steps` steps of `opt` (each group's peak x its lr_scale).

    torch's OneCycleLR divides by zero when its rise ends on step 0 (pct_start x total_steps == 1, e.g. 4 steps at
    pct_start 0.25); a rise ending 1e-9 of a step later is the same schedule (step 0 at the start LR, step 1 on the
    descent) and computes."""
    o = cfg.optim
    pct_start = o.pct_start * (1 + 1e-9) if o.pct_start * total_steps == 1 else o.pct_start
    return torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[o.lr_max * g.get("lr_scale", 1.0) for g in opt.param_groups], total_steps=total_steps,
        pct_start=pct_start, anneal_strategy=o.anneal, div_factor=o.lr_div, final_div_factor=o.final_div,
        cycle_momentum=False, three_phase=False)


def one_cycle_lrs(cfg: RunConfig, total_steps: int) -> torch.Tensor:
    """(total_steps,) fp64: the LR OneCycleLR gives each step of the run (its own code, run once on a dummy)."""
    dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.optim.lr_max / cfg.optim.lr_div)
    sched = one_cycle(dummy, cfg, total_steps)
    lrs = []
    for _ in range(total_steps):
        lrs.append(sched.get_last_lr()[0])
        dummy.step()
        sched.step()
    return torch.tensor(lrs, dtype=torch.float64)


def make_optimizer(params, cfg: RunConfig, lr: float | torch.Tensor, fused: bool | None = None,
                   foreach: bool | None = None):
    """Adam or Nesterov SGD as the config says; `fused` (None: torch's default) where a tensor LR needs it,
    `foreach` where torch.compile traces the update (Dynamo does not trace into the fused kernels)."""
    o = cfg.optim
    if o.optimizer == "adam":  # foreach (compiled): capturable, so its step count stays on the device
        return torch.optim.Adam(params, lr=lr, weight_decay=o.weight_decay, fused=fused, foreach=foreach,
                                capturable=bool(foreach))
    return torch.optim.SGD(params, lr=lr, momentum=o.momentum, nesterov=True, weight_decay=o.weight_decay,
                           fused=fused, foreach=foreach)


def _nothing() -> None:
    pass


def cuda_capture(fn: Callable[[], None], warmup: int, rewind: Callable[[], None] = _nothing) -> Callable[[], None]:
    """Warm `fn` up on a side stream (`rewind` after each call), capture one call as a CUDA graph (memory from the
    graph's private pool), and return the graph's replay: the PyTorch recipe for whole-network capture (MLPerf's
    ResNet does the same). The captured call itself does not run. Not yet run on a GPU by this project."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
            rewind()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def run_directly(fn: Callable[[], None], warmup: int, rewind: Callable[[], None] = _nothing) -> Callable[[], None]:
    """The CPU stand-in for cuda_capture: the same warm-up calls, then `fn` itself as the 'replay'. What a capture
    records is what one call does, so a step through this stand-in must equal the plain step (tested)."""
    for _ in range(warmup):
        fn()
        rewind()
    fn()  # the call a capture records (and, unlike a capture, also runs)
    return fn


STANDIN_ENV = "BENCH_CUDA_STANDIN"  # =1: CUDA-only step modes run on a CPU through run_directly (the GPU check's
# rehearsal proves the commands end to end there; the numbers such a run writes are a CPU's, labelled as such)


def cuda_standin() -> bool:
    """Whether CUDA-only step modes (CUDA graphs, the captured whole step) may run on a CPU through the stand-ins."""
    return os.environ.get(STANDIN_ENV, "") == "1"


def capture_for(device: torch.device) -> Callable[..., Callable[[], None]]:
    """The capture a compile=graph step uses here: a CUDA graph on CUDA; on a CPU the stand-in where
    BENCH_CUDA_STANDIN=1, else a ConfigError naming the fix (nothing is built or run first)."""
    if device.type == "cuda":
        return cuda_capture
    if cuda_standin():
        return run_directly
    raise ConfigError(f"train.compile=graph captures the step as a CUDA graph; this run is on the {device.type}: "
                      f"use --compile=default (or run on a CUDA device)")


class StepGraph:
    """A whole training step as one replay: the batch is copied into static buffers, then the captured step
    (forward, backward, optimizer, LR, bookkeeping) replays on them. Captured at its first call, which runs the
    `warmup` calls a capture needs (and the captured call, on the CPU stand-in), putting `counters` (the step
    counters, the loss record) back after each, then replays once for its own batch: a first call counts as one
    step, so buffers sized for the run's steps hold it (the warm-up calls indexed past them before). The weights
    and optimizer state keep the extra calls' updates (the harness's warm-up restores them)."""

    def __init__(self, step_fn: Callable[[torch.Tensor, torch.Tensor], None], warmup: int = 3,
                 capture: Callable[..., Callable[[], None]] = cuda_capture,
                 counters: tuple[torch.Tensor, ...] = ()):
        self.step_fn, self.warmup, self.capture, self.counters = step_fn, warmup, capture, counters
        self.x = self.y = self.replay = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.replay is None:
            self.x, self.y = x.clone(memory_format=torch.preserve_format), y.clone()
            before = [t.clone() for t in self.counters]

            @torch.no_grad()
            def rewind() -> None:  # in place: the graph holds these addresses
                for t, value in zip(self.counters, before):
                    t.copy_(value)
            self.replay = self.capture(lambda: self.step_fn(self.x, self.y), self.warmup, rewind)
            rewind()
            self.replay()
            return
        if x.shape != self.x.shape:
            raise ValueError(f"a captured step replays batches of {tuple(self.x.shape)}, got {tuple(x.shape)}: "
                             f"use data.drop_last=true with train.compile=graph")
        self.x.copy_(x)
        self.y.copy_(y)
        self.replay()


def init_state_(opt: torch.optim.Optimizer) -> None:
    """The state SGD (momentum buffer) or Adam (step, moments) creates at its first step, created now, as zeros:
    a compiled update then sees one state structure from its first call (no recompile at step 2). Zeros update
    exactly as torch's first step: momentum x 0 + grad is the clone of grad SGD would make. (FilterMuon makes its
    own at construction.)"""
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state[p]
            if isinstance(opt, torch.optim.SGD):
                if group["momentum"]:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                continue
            scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32  # torch's rule
            state["step"] = torch.zeros((), dtype=scalar, device=p.device)  # capturable: on the device
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def loss_and_hits(model, x, y, cfg: RunConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward under autocast; the mean (label-smoothed) cross-entropy in fp32 and the correct count."""
    with autocast(device, cfg.train.precision):
        logits = model(x)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16/fp16 -> fp32; fp64 stays
    loss = F.cross_entropy(logits, y, label_smoothing=cfg.optim.label_smoothing)
    return loss, (logits.detach().argmax(1) == y).sum()


class TrainStep:
    """`step(x, y)` trains one batch; `losses[:n]` and `correct` hold the epoch's record until `new_epoch()`.

    A step is three parts: forward+loss, `loss.backward()` in plain Python, then the update (LR from the device
    schedule, optimizer, bookkeeping). With `train.compile` on, the forward+loss and the update are each one
    torch.compile'd function with no graph break inside (AOTAutograd compiles the backward of the first); the
    optimizer is then the foreach one, traced into the update's graph. Eager, it is torch's fused optimizer.
    fp16 alone keeps an eager GradScaler update (its inf check reads the host). `compile=graph` (CUDA) captures
    all three as one CUDA graph (StepGraph) and replays it each step.
    """

    def __init__(self, model: torch.nn.Module, cfg: RunConfig, device: torch.device, steps_per_epoch: int,
                 total_steps: int, ema: WeightEMA | None = None, capture=None):
        self.model, self.cfg, self.device, self.ema = model, cfg, device, ema
        if cfg.train.compile == "graph" and capture is None:  # refused here, before anything is built
            capture = capture_for(device)
        dtype = next(model.parameters()).dtype  # fp32 (fp64 in the tests): the LR and the losses in it
        lrs = one_cycle_lrs(cfg, total_steps)
        self.lr_values = lrs.tolist()  # host copy, for the epoch log
        self.lrs = lrs.to(device=device, dtype=dtype)  # (total_steps,)
        self.lr = self.lrs[0].clone()  # the live LR: the optimizer holds this very tensor
        mode = cfg.train.compile
        compiled = mode != "off"
        self.opt = make_optimizer(param_groups(model, cfg), cfg, self.lr, fused=not compiled, foreach=compiled or None)
        self.muon = make_muon(model, cfg, self.lr)  # None unless optim.muon_lr > 0
        self.opts = [self.opt] + ([self.muon] if self.muon else [])
        groups = [g for opt in self.opts for g in opt.param_groups]
        for group in groups:  # the optimizers hold these very tensors: the base LR or a scaled copy
            group["lr"] = self.lr if group["lr_scale"] == 1 else self.lr * group["lr_scale"]
        self.scaled = [(g["lr"], g["lr_scale"]) for g in groups if g["lr_scale"] != 1]
        self.fp16 = cfg.train.precision == "fp16"  # a plain bool: Dynamo does not trace GradScaler's methods
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.fp16)  # fp16 only: syncs
        self._scaler_start = self.scaler.state_dict()  # its scale and growth count at step 0 (reset puts them back)
        self.i = torch.zeros((), dtype=torch.long, device=device)  # global step
        self.j = torch.zeros((), dtype=torch.long, device=device)  # step within the epoch
        self.losses = torch.zeros(steps_per_epoch, device=device, dtype=dtype)  # (steps_per_epoch,)
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.steps = 0  # host counter of steps taken (drives the EMA; never read from the device)
        self.params = [p for g in groups for p in g["params"]]
        # The optimizers' own step bodies: a public step() wraps it in a profiler hook and a grad-mode guard whose
        # explicit torch._dynamo.graph_break() calls would split the compiled update (no_grad above does its work)
        self._opt_steps = [inspect.unwrap(type(opt).step).__get__(opt) for opt in self.opts]
        self._forward, self._update = self._forward_loss, self._update_step
        if compiled:  # the step mutates its state in place: fixed addresses let CUDA graphs keep it
            for t in (self.lrs, self.lr, *(lr for lr, _ in self.scaled), self.i, self.j, self.losses, self.correct):
                torch._dynamo.mark_static_address(t)
            init_state_(self.opt)
            kw = {"mode": None if mode in ("default", "graph") else mode, "dynamic": False}
            self._forward = torch.compile(self._forward_loss, **kw)
            if not self.fp16:
                self._update = torch.compile(self._update_step, **kw)
        # compile=graph: the whole step captured once and replayed (`capture`: by default capture_for(device))
        self._run = self._train_step
        if mode == "graph":
            self._run = StepGraph(self._train_step, capture=capture,
                                  counters=(self.i, self.j, self.losses, self.correct))

    def _forward_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return loss_and_hits(self.model, x, y, self.cfg, self.device)

    def _update_step(self, loss: torch.Tensor, hits: torch.Tensor) -> None:
        self.lr.copy_(self.lrs.index_select(0, self.i.view(1)).view(()))  # a tensor index: no host read
        for lr, scale in self.scaled:
            torch.mul(self.lr, scale, out=lr)
        if self.fp16:  # unscale, skip the step on inf, adjust the scale (eager: the inf check reads the host)
            for opt in self.opts:
                self.scaler.step(opt)
            self.scaler.update()
        else:
            with torch.no_grad():
                for opt_step in self._opt_steps:
                    opt_step()
        self.losses.index_copy_(0, self.j.view(1), loss.detach().view(1))
        self.correct += hits
        self.i += 1
        self.j += 1

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        loss, hits = self._forward(x, y)
        self.scaler.scale(loss).backward()  # the scaler's scale() is the identity unless fp16
        self._update(loss, hits)
        for p in self.params:  # what zero_grad(set_to_none=True) does, without its profiler wrapper
            p.grad = None

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self._run(x, y)
        if self.ema is not None:
            self.ema.update(self.steps)
        self.steps += 1

    def new_epoch(self) -> None:
        self.j.zero_()
        self.losses.zero_()
        self.correct.zero_()

    @torch.no_grad()
    def reset(self) -> None:
        """Back to step 0 in place (after a warm-up): optimizer state zeroed where it lives, so compiled graphs
        keep their buffers; a zero momentum (or Adam moment and step) updates exactly as a fresh optimizer."""
        for state in (s for opt in self.opts for s in opt.state.values()):
            for value in state.values():
                if torch.is_tensor(value):
                    value.zero_()
        self.i.zero_()
        self.new_epoch()
        self.steps = 0
        if self.ema is not None:
            self.ema.reset()  # the next update copies the model outright: the warm-up's averages are gone
        if self.fp16:  # a warm-up's overflows halve the loss scale and its clean steps count toward doubling it;
            self.scaler.load_state_dict(self._scaler_start)  # in place, so a captured step keeps its tensors


class PlainStep:
    """The previous step, kept as the reference: float LR from OneCycleLR, AveragedModel every k steps.

    It shares no code with TrainStep but the schedule (`one_cycle`, itself checked against OneCycleLR): its loss,
    parameter groups, optimizers and Muon are written out here, so that a slip in TrainStep's helpers (a dropped
    label smoothing, a misrouted weight decay) shows as a difference between the two, not as the same number twice.
    """

    def __init__(self, model: torch.nn.Module, cfg: RunConfig, device: torch.device, total_steps: int):
        o = cfg.optim
        self.model, self.cfg, self.device = model, cfg, device
        lr0 = o.lr_max / o.lr_div
        params = [p for p in model.parameters() if p.requires_grad]
        filters = [p for p in params if p.ndim == 4] if o.muon_lr > 0 else []  # Muon's: the conv filters
        in_muon = {id(p) for p in filters}
        norm_bias = {id(m.bias) for m in model.modules() if isinstance(m, NORM_LAYERS) and m.bias is not None}
        scaled = [p for p in params if id(p) in norm_bias and id(p) not in in_muon] if o.norm_bias_lr_scale != 1 else []
        apart = in_muon | {id(p) for p in scaled}
        rest = [p for p in params if id(p) not in apart]
        groups = [{"params": rest, "lr_scale": 1.0}]
        if scaled:  # the norm biases: LR x scale, weight decay / scale
            groups.append({"params": scaled, "lr_scale": o.norm_bias_lr_scale,
                           "weight_decay": o.weight_decay / o.norm_bias_lr_scale})
        if o.optimizer == "adam":
            self.opt = torch.optim.Adam(groups, lr=lr0, weight_decay=o.weight_decay)
        else:
            self.opt = torch.optim.SGD(groups, lr=lr0, momentum=o.momentum, nesterov=True, weight_decay=o.weight_decay)
        self.muon = None
        if filters:
            self.muon = FilterMuon(filters, lr0, o.muon_momentum, o.muon_ns_steps,
                                   None if cfg.train.precision == "fp32" else torch.bfloat16)
            self.muon.param_groups[0]["lr_scale"] = o.muon_lr / o.lr_max  # its peak: muon_lr
        self.opts = [self.opt] + ([self.muon] if self.muon else [])
        self.scheds = [one_cycle(opt, cfg, total_steps) for opt in self.opts]
        self.ema = None
        if o.ema_decay:
            self.ema = torch.optim.swa_utils.AveragedModel(
                model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(o.ema_decay ** o.ema_every),
                use_buffers=True)
        self.steps = 0

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast(self.device, self.cfg.train.precision):
            logits = self.model(x)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        loss = F.cross_entropy(logits, y, label_smoothing=self.cfg.optim.label_smoothing)
        hits = (logits.detach().argmax(1) == y).sum()
        for opt in self.opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt, sched in zip(self.opts, self.scheds):
            opt.step()
            sched.step()
        self.steps += 1
        if self.ema is not None and self.steps % self.cfg.optim.ema_every == 0:
            self.ema.update_parameters(self.model)
        return loss.detach(), hits
