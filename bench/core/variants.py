"""Variants (how a recipe is executed: pipeline, precision, layout, compile, kernels), the ladder of one change per
rung, profiles (how much of it runs), and `build_config`: recipe, then variant, then profile, then overrides.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from bench.core.config import ConfigError, RunConfig, _check, apply_overrides
from bench.core.machine import cpu_has_native_bf16
from bench.core.recipes import RECIPES, RENAMED, base_preset, recipe_changes

# ---- variants (how it is executed) ------------------------------------------------------------

def eager_variant(cfg: RunConfig, device_type: str) -> RunConfig:
    """The reference notebook's way: per-image DataLoader, fp32, NCHW, no compile, eager BatchNorm."""
    return replace(cfg, variant="eager",
                   data=replace(cfg.data, pipeline="dataloader"),
                   model=replace(cfg.model, norm_kernel="eager"),
                   train=replace(cfg.train, precision="fp32", channels_last=False, compile="off", warmup_steps=0))


def fast_variant(cfg: RunConfig, device_type: str) -> RunConfig:
    """The fastest settings measured per device type (see docs/variants.md).

    CPU: bf16 channels-last eager where the CPU has native bf16, else fp32 channels-last (bf16 is ~8x slower
    there); torch.compile of the bf16 step measured slower on the CPU.
    CUDA: bf16 channels-last with torch.compile (not yet measured on a GPU by this project).
    """
    bf16 = device_type != "cpu" or cpu_has_native_bf16()
    train = replace(cfg.train, precision="bf16" if bf16 else "fp32", channels_last=True)
    if device_type == "cuda":
        train = replace(train, compile="default", warmup_steps=3)
    else:
        train = replace(train, compile="off", warmup_steps=0)
    return replace(cfg, variant="fast", data=replace(cfg.data, pipeline="device"),
                   model=replace(cfg.model, norm_kernel="eager"), train=train)


# The ladder (DAWNBench-style ablation): `eager`, then one change per rung, each rung a named variant run
# through the one loop, so the leaderboard shows where the speed comes from.
LADDER_STEPS: tuple[tuple[str, dict[str, str]], ...] = (  # (rung, the overrides it adds to the rung before)
    ("device", {"data.pipeline": "device"}),
    ("bf16", {"train.precision": "bf16"}),
    ("channels-last", {"train.channels_last": "true"}),
    ("compile", {"train.compile": "default", "train.warmup_steps": "3"}),
    ("cuda-graphs", {"train.compile": "reduce-overhead"}),
    ("triton", {"model.norm_kernel": "triton"}),
)
LADDER = ("eager",) + tuple(rung for rung, _ in LADDER_STEPS)
NEEDS_CUDA = {  # rungs without a meaningful CPU form: skipped there with this reason
    "cuda-graphs": "CUDA graphs (compile mode reduce-overhead) replay captured CUDA kernels; a CPU has none",
    "triton": "the fused Triton BN+ReLU runs interpreted on a CPU (a correctness mode, minutes per batch)",
}


def ladder_variant(name: str) -> Callable[[RunConfig, str], RunConfig]:
    """The rung `name`: the eager variant plus every rung's overrides up to and including its own."""
    def variant(cfg: RunConfig, device_type: str) -> RunConfig:
        cfg = eager_variant(cfg, device_type)
        for rung, changes in LADDER_STEPS:
            cfg = apply_overrides(cfg, changes)
            if rung == name:
                return replace(cfg, variant=name)
        raise ConfigError(f"unknown ladder rung {name!r}; the rungs are {', '.join(LADDER)}")
    return variant


VARIANTS: dict[str, Callable[[RunConfig, str], RunConfig]] = {
    "eager": eager_variant, "fast": fast_variant, **{rung: ladder_variant(rung) for rung, _ in LADDER_STEPS}}


# ---- profiles (how much of it runs) ------------------------------------------------------------

# sized so that `make bench` (eager, then fast) ends within 5 minutes on the slowest 2-core CPU we have
SMOKE_TRAIN_IMAGES, SMOKE_TEST_IMAGES, SMOKE_EPOCHS = 4096, 1000, 1


def smoke_profile(cfg: RunConfig) -> RunConfig:
    """Same code path on real data, small enough for a CPU: 4,096 training images, 1 epoch, 1,000 test."""
    return replace(cfg, profile="smoke",
                   data=replace(cfg.data, train_subset=SMOKE_TRAIN_IMAGES, test_subset=SMOKE_TEST_IMAGES),
                   train=replace(cfg.train, epochs=SMOKE_EPOCHS, stop_at_target=True))


PROFILES: dict[str, Callable[[RunConfig], RunConfig]] = {"full": lambda cfg: replace(cfg, profile="full"),
                                                          "smoke": smoke_profile}


def build_config(preset: str = "seed", variant: str | None = None, profile: str = "full",
                 overrides: dict[str, str] | None = None, device_type: str = "cpu") -> RunConfig:
    """Preset, then variant, then profile, then `key=value` overrides, validated at every step."""
    _check(preset not in RENAMED, f"the recipe {preset!r} is now called {RENAMED.get(preset)!r} (its old rows read "
           f"as that); write --preset={RENAMED.get(preset)}, or --variant={preset} for how a run is executed")
    _check(preset in RECIPES, f"unknown preset {preset!r}; choose one of {', '.join(RECIPES)}")
    _check(profile in PROFILES, f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    cfg = RECIPES[preset]()
    if variant is not None:
        _check(variant in VARIANTS, f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        cfg = VARIANTS[variant](cfg, device_type)
    cfg = PROFILES[profile](cfg)
    changed = apply_overrides(cfg, overrides or {})
    changes = recipe_changes(cfg, changed)
    return replace(changed, preset=f"{preset}({', '.join(changes)})") if changes else changed


def axis_settings(cfg: RunConfig) -> dict[str, str]:
    """A config's execution settings, the axes a variant sets (as the row's columns spell them)."""
    return {"pipeline": cfg.data.pipeline, "precision": cfg.train.precision,
            "channels_last": str(cfg.train.channels_last), "compile": cfg.train.compile,
            "norm_kernel": cfg.model.norm_kernel}


def variant_settings(cfg: RunConfig, device_type: str) -> dict[str, str] | None:
    """The settings `cfg`'s variant gives its recipe on this device type, on this machine, now (None for a run
    without a variant). Asked once, when the run is recorded: the row keeps the answer."""
    if cfg.variant not in VARIANTS:
        return None
    return axis_settings(build_config(base_preset(cfg.preset), cfg.variant, cfg.profile, {}, device_type))
