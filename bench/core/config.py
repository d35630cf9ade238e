"""The config tree of a run: frozen dataclasses whose fields are every knob (`--help` lists them from the
comments beside them), each section validated as it is built, and `--key=value` overrides parsed into it.

What is trained (recipes) is bench/core/recipes.py; how it is executed (variants) and how much of it runs
(profiles) is bench/core/variants.py, where `build_config` puts the three together.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

class ConfigError(ValueError):
    """A config value or override is invalid; the message says which and what is allowed."""


TRAIN_IMAGES = 50_000  # CIFAR-10's training split: no subset or batch is larger
MAX_EPOCHS = 1_000  # the schedule is a list of every step's LR: 1e9 epochs would build one for minutes, silently
MAX_WARMUP_STEPS = 1_000  # compilation and capture need a handful
MAX_WORKERS = 256


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    _check(value in allowed, f"{name}={value!r} is not one of {', '.join(allowed)}")


@dataclass(frozen=True)
class DataConfig:
    data_dir: str = ""  # official binary layout; empty: $CIFAR10_DIR, else download into the cache
    pipeline: str = "device"  # device | dali | dataloader
    train_subset: int = 0  # first N training images (0: all 50,000)
    test_subset: int = 0  # first N test images (0: all 10,000)
    workers: int = 2  # DataLoader worker processes (dataloader pipeline only)
    drop_last: bool = True  # drop the last partial training batch

    def __post_init__(self):
        _one_of("data.pipeline", self.pipeline, ("device", "dali", "dataloader"))
        _check(self.train_subset >= 0, f"data.train_subset={self.train_subset} must be >= 0 (0 means all)")
        _check(self.test_subset >= 0, f"data.test_subset={self.test_subset} must be >= 0 (0 means all)")
        _check(0 <= self.workers <= MAX_WORKERS, f"data.workers={self.workers} must be in [0, {MAX_WORKERS}]")
        object.__setattr__(self, "data_dir", os.path.expanduser(self.data_dir))  # `~/x` as a shell would read it


@dataclass(frozen=True)
class AugConfig:
    crop_padding: int = 4  # pixels of zero padding before the random 32x32 crop (0: no crop)
    flip: bool = True  # horizontal flip with p = 0.5
    cutout_size: int = 8  # side of the square cut out (0: no cutout)
    cutout_prob: float = 1.0  # share of images that get a cutout
    cutout_clip: bool = True  # the square may cross the border (clipped), as the reference
    flip_alternate: bool = False  # each image flipped at random in epoch 1, then the opposite way each epoch (airbench)

    def __post_init__(self):
        _check(0 <= self.crop_padding <= 16, f"aug.crop_padding={self.crop_padding} must be in [0, 16]")
        _check(0 <= self.cutout_size <= 32, f"aug.cutout_size={self.cutout_size} must be in [0, 32]")
        _check(0.0 <= self.cutout_prob <= 1.0, f"aug.cutout_prob={self.cutout_prob} must be in [0, 1]")


@dataclass(frozen=True)
class ModelConfig:
    norm: str = "bn"  # bn | gn | ln
    norm_kernel: str = "eager"  # eager | triton (fused BatchNorm+ReLU, bn only)
    dropout: float = 0.0  # dropout after every norm+ReLU
    logit_scale: float = 1.0  # multiplies the logits (Page's ResNet-9 uses 0.125)

    def __post_init__(self):
        _one_of("model.norm", self.norm, ("bn", "gn", "ln"))
        _one_of("model.norm_kernel", self.norm_kernel, ("eager", "triton"))
        _check(self.norm_kernel == "eager" or self.norm == "bn",
               f"model.norm_kernel=triton fuses BatchNorm only; it needs model.norm=bn, not {self.norm!r}")
        _check(0.0 <= self.dropout < 1.0, f"model.dropout={self.dropout} must be in [0, 1)")
        _check(self.logit_scale > 0, f"model.logit_scale={self.logit_scale} must be > 0")


@dataclass(frozen=True)
class InitConfig:
    """Initialisation and freezing: the recipe's, not the network's (shapes and parameter count stay)."""
    whiten: bool = False  # prep conv: 54 of its 64 filters = +-eigenvectors of the 3x3 patch covariance / sqrt(eig)
    whiten_images: int = 5000  # training images whose patches give the covariance (computed on the clock)
    whiten_eps: float = 5e-4  # added to the eigenvalues before the inverse square root
    whiten_frozen: bool = True  # prep conv weight not trained (its bias is)
    dirac: bool = False  # every later conv starts as the identity on its first min(C_in, C_out) channels

    def __post_init__(self):
        _check(self.whiten_images >= 1, f"init.whiten_images={self.whiten_images} must be >= 1")
        _check(self.whiten_eps > 0, f"init.whiten_eps={self.whiten_eps} must be > 0")


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = "adam"  # adam | sgd (Nesterov)
    lr_max: float = 2e-3  # one-cycle peak LR (per batch, not scaled by batch size)
    lr_div: float = 25.0  # start LR = lr_max / lr_div; the schedule ends at the start LR (no annihilation)
    final_div: float = 1.0  # end LR = start LR / final_div (1: end at the start LR)
    pct_start: float = 5 / 24  # share of the steps spent rising to the peak
    anneal: str = "linear"  # linear | cos
    weight_decay: float = 1e-4  # L2 added to the gradient (Adam's classic, not AdamW)
    momentum: float = 0.9  # SGD momentum (Nesterov)
    label_smoothing: float = 0.0  # share of the target spread over all classes in the training loss
    lr_source: str = "reference LR finder suggestion (Adam, wd 1e-4, batch 512): 2e-3"  # where lr_max came from
    ema_decay: float = 0.0  # per-step decay of the weights' moving average, evaluated instead of them (0: off)
    ema_every: int = 5  # the average is updated every k steps with decay**k (Page, hlb-CIFAR10, airbench)
    norm_scale_frozen: bool = False  # norm layers' scales fixed at 1 and not trained (Page's ResNet-9, airbench)
    norm_bias_lr_scale: float = 1.0  # norm layers' biases: LR x this, weight decay / this (Page, airbench: 64)
    muon_lr: float = 0.0  # >0: conv filters trained by Muon (core/muon.py), peak LR this, one-cycle shape (0: off)
    muon_momentum: float = 0.6  # Muon's Nesterov momentum (airbench: 0.6)
    muon_ns_steps: int = 3  # Newton-Schulz iterations per Muon update (airbench: 3; torch's default: 5)

    def __post_init__(self):
        _one_of("optim.optimizer", self.optimizer, ("adam", "sgd"))
        _one_of("optim.anneal", self.anneal, ("linear", "cos"))
        _check(self.lr_max > 0, f"optim.lr_max={self.lr_max} must be > 0")
        _check(self.lr_div >= 1, f"optim.lr_div={self.lr_div} must be >= 1")
        _check(self.final_div >= 1, f"optim.final_div={self.final_div} must be >= 1")
        _check(0 < self.pct_start < 1, f"optim.pct_start={self.pct_start} must be in (0, 1)")
        _check(self.weight_decay >= 0, f"optim.weight_decay={self.weight_decay} must be >= 0")
        _check(0 <= self.momentum < 1, f"optim.momentum={self.momentum} must be in [0, 1)")
        _check(self.momentum > 0 or self.optimizer != "sgd",
               f"optim.momentum={self.momentum} with optim.optimizer=sgd: Nesterov SGD needs a momentum in (0, 1)")
        _check(0 <= self.label_smoothing < 1, f"optim.label_smoothing={self.label_smoothing} must be in [0, 1)")
        _check(0 <= self.ema_decay < 1, f"optim.ema_decay={self.ema_decay} must be in [0, 1)")
        _check(self.ema_every >= 1, f"optim.ema_every={self.ema_every} must be >= 1")
        _check(self.norm_bias_lr_scale > 0, f"optim.norm_bias_lr_scale={self.norm_bias_lr_scale} must be > 0")
        _check(self.muon_lr >= 0, f"optim.muon_lr={self.muon_lr} must be >= 0 (0: no Muon)")
        _check(0 <= self.muon_momentum < 1, f"optim.muon_momentum={self.muon_momentum} must be in [0, 1)")
        _check(1 <= self.muon_ns_steps < 100, f"optim.muon_ns_steps={self.muon_ns_steps} must be in [1, 100)")


TTA_MODES = ("none", "flip", "flip_translate")  # test-time augmentation, cheapest first; each adds views
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs", "graph")
# graph: torch.compile (default mode) inside one CUDA graph of the whole step (bench/core/step.py StepGraph); CUDA only


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 512  # training images per step (the global batch: split over ranks under torchrun)
    epochs: int = 24  # length of the LR schedule
    target_acc: float = 0.90  # test accuracy that stops the clock
    stop_at_target: bool = True  # stop after the first epoch at or above target_acc
    eval_from: int = 1  # first epoch whose end is evaluated (the last epoch always is); earlier ones cannot stop
    seed: int = 0  # initialisation, augmentation and data order; --runs=N uses seed..seed+N-1
    eval_batch_size: int = 1024  # test images per evaluation batch (no effect on accuracy)
    warmup_steps: int = 0  # untimed steps before training (compilation, autotuning); weights restored after
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "bf16"  # fp32 | bf16 | fp16 (autocast; fp16 with a grad scaler)
    channels_last: bool = True  # NHWC memory layout for the model and its input
    compile: str = "off"  # off | a torch.compile mode (COMPILE_MODES); reduce-overhead adds CUDA graphs
    sync_bn: bool = False  # batch statistics over all ranks under torchrun (SyncBatchNorm)
    tta: str = "none"  # test-time augmentation: none | flip | flip_translate (its cost counts toward the target)

    def __post_init__(self):
        _check(1 <= self.batch_size <= TRAIN_IMAGES, f"train.batch_size={self.batch_size} must be in "
               f"[1, {TRAIN_IMAGES:,}] (the training images)")
        _check(1 <= self.eval_batch_size <= TRAIN_IMAGES, f"train.eval_batch_size={self.eval_batch_size} must be in "
               f"[1, {TRAIN_IMAGES:,}]")
        _check(1 <= self.epochs <= MAX_EPOCHS, f"train.epochs={self.epochs} must be in [1, {MAX_EPOCHS:,}]")
        _check(0 < self.target_acc <= 1.0, f"train.target_acc={self.target_acc} must be in (0, 1] (a fraction)")
        _check(self.eval_from >= 1, f"train.eval_from={self.eval_from} must be >= 1 (the last epoch is always "
               f"evaluated, so a value past train.epochs evaluates only the last)")
        _check(0 <= self.warmup_steps <= MAX_WARMUP_STEPS,
               f"train.warmup_steps={self.warmup_steps} must be in [0, {MAX_WARMUP_STEPS:,}]")
        _check(0 <= self.seed < 2 ** 63, f"train.seed={self.seed} must be in [0, 2**63) (torch's generators take 64 bits)")
        _check(re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None,
               f"train.device={self.device!r} must be auto, cpu, cuda or cuda:N (N a device index)")
        _one_of("train.precision", self.precision, ("fp32", "bf16", "fp16"))
        _one_of("train.compile", self.compile, COMPILE_MODES)
        _check(self.compile != "graph" or self.warmup_steps >= 1,
               "train.compile=graph captures the step in the warm-up: set train.warmup_steps >= 1")
        _one_of("train.tta", self.tta, TTA_MODES)


@dataclass(frozen=True)
class RunConfig:
    preset: str = "seed"  # recipe name, recorded in the results
    variant: str = "custom"  # execution variant name, recorded in the results
    profile: str = "full"  # full | smoke
    results_dir: str = "results"  # where runs.csv and runs/<run_id>/ go
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    init: InitConfig = field(default_factory=InitConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        _one_of("profile", self.profile, ("full", "smoke"))
        _check(self.results_dir.strip() != "", "results_dir is empty: give a folder, e.g. --results_dir=results")
        object.__setattr__(self, "results_dir", os.path.expanduser(self.results_dir))  # `~/res`, not `./~/res`
        for section in fields(self):  # inf/nan pass every range check written as a comparison with inf
            value = getattr(self, section.name)
            for f in fields(value) if dataclasses.is_dataclass(value) else ():
                x = getattr(value, f.name)
                _check(not isinstance(x, float) or math.isfinite(x),
                       f"{section.name}.{f.name}={x} must be a finite number")
        _check(not (self.train.sync_bn and self.model.norm_kernel == "triton"),
               "train.sync_bn=true needs model.norm_kernel=eager: the fused kernel computes per-rank statistics")
        _check(not (self.aug.flip_alternate and self.data.pipeline == "dali"),
               "aug.flip_alternate=true is not implemented in the dali pipeline; use data.pipeline=device or dataloader")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


# ---- overrides ---------------------------------------------------------------------------------

def leaf_keys(cfg: Any = None, prefix: str = "") -> dict[str, type]:
    """Every settable dotted key of the tree and its type, e.g. {'train.epochs': int, ...}."""
    cfg = cfg if cfg is not None else RunConfig()
    out: dict[str, type] = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(leaf_keys(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = type(value)
    return out


def resolve_key(key: str) -> str:
    """A dotted key as is, or a bare leaf name when exactly one section has it (`epochs` -> `train.epochs`)."""
    keys = leaf_keys()
    if key in keys:
        return key
    matches = _keys_with_leaf(key, keys)
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConfigError(f"key {key!r} is ambiguous: write one of {', '.join(matches)}")
    raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(sorted(keys))}")


def short_key(key: str) -> str:
    """The inverse of resolve_key: the bare leaf name where it is unambiguous, else the dotted key."""
    leaf = key.rsplit(".", 1)[-1]
    return leaf if len(_keys_with_leaf(leaf, leaf_keys())) == 1 else key


def _keys_with_leaf(leaf: str, keys) -> list[str]:
    return [k for k in keys if k.rsplit(".", 1)[-1] == leaf]


def parse_value(key: str, text: str, kind: type) -> Any:
    """Parse a command-line string into the field's type, with an error that names the key."""
    try:
        if kind is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        return text
    except ValueError:
        raise ConfigError(f"{key}={text!r} is not a valid {kind.__name__}") from None


def apply_overrides(cfg: RunConfig, overrides: dict[str, str]) -> RunConfig:
    """Return cfg with `key=value` strings applied; each section is re-validated once, with all of its new
    values in (so checks across keys, such as SGD needing a momentum, do not depend on the order given)."""
    types = leaf_keys()
    sections: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for raw_key, text in overrides.items():
        key = resolve_key(raw_key)
        value = parse_value(key, text, types[key])
        if "." in key:
            section, name = key.split(".", 1)
            sections.setdefault(section, {})[name] = value
        else:
            top[key] = value
    for section, values in sections.items():
        cfg = replace(cfg, **{section: replace(getattr(cfg, section), **values)})
    return replace(cfg, **top) if top else cfg


def from_dict(d: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from `to_dict()` output (e.g. the config_json column of a results row)."""
    defaults = RunConfig()
    kwargs = {}
    for f in fields(RunConfig):
        if f.name not in d:
            continue
        section = getattr(defaults, f.name)  # a section's class is its default's: no second list of them
        kwargs[f.name] = type(section)(**d[f.name]) if dataclasses.is_dataclass(section) else d[f.name]
    return RunConfig(**kwargs)
