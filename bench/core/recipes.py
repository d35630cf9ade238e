"""Recipes (what is trained): presets as functions over RunConfig, the keys that make a recipe, and the names
rows spell them by. A recipe's docstring says what it is and where its measurements are (docs/recipes.md).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from bench.core.config import InitConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig, leaf_keys, short_key

# ---- presets: recipes (what is trained) -------------------------------------------------------

def seed_recipe() -> RunConfig:
    """The reference recipe: Adam, batch 512, one-cycle over 24 epochs peaking after epoch 5, no annihilation.

    LR bounds: max 2e-3 is the reference's LR-finder suggestion, min = max / 25; on the 2-core CPU
    this reached 90.9% at epoch 18 in bf16 channels-last (run 20261128-093615-5319ad in results/runs.csv).
    """
    return RunConfig(preset="seed")


def fast8_recipe() -> RunConfig:
    """The first fast recipe (David Page's ResNet-9 choices), kept reproducible: Nesterov SGD (lr 0.4 on the mean
    loss, weight decay 5e-4), one-cycle over 8 epochs peaking at a quarter and annealing to lr/1000, label
    smoothing 0.2, logits scaled by 0.125, EMA of the weights (BN statistics included) every step, flip TTA.

    Measured on the 2-core CPU with native bf16, bf16 channels-last, full data: 90% at epoch 7 for each of 3 seeds
    (docs/results-history.md).
    """
    return RunConfig(
        preset="fast8",
        model=ModelConfig(logit_scale=0.125),
        optim=OptimConfig(optimizer="sgd", lr_max=0.4, lr_div=20.0, final_div=50.0, pct_start=0.25, anneal="linear",
                          weight_decay=5e-4, momentum=0.9, label_smoothing=0.2, ema_decay=0.99, ema_every=1,
                          lr_source="Page's ResNet-9 schedule (0.4 peak)"),
        train=TrainConfig(epochs=8, tta="flip"))


def fast5_recipe() -> RunConfig:
    """The 5-epoch recipe (the `fast` before the 4-epoch Muon one), kept reproducible under this name: fast8's optimiser over a
    5-epoch one-cycle, plus: a whitened, frozen first conv (airbench, Page); alternating flip; EMA every 5 steps
    (decay 0.99 per step, so 0.99**5 per update); flip + translate test-time augmentation; no cutout (airbench's
    choice): with cutout, seed 0 ended at 89.39% after 5 epochs with a training accuracy of 90.1% on augmented
    images, i.e. underfitting, so the regulariser goes. Network unchanged. Dirac initialisation (init.dirac) is
    available but not used: at this LR it raised the training loss above chance in a 2,048-image trial
    (docs/recipes.md).

    Crops from the image padded by 2, not 4 (airbench's translate 2): with padding 4 seed 0 ended at 89.88%.
    Measured (2-core CPU with native bf16, full data, seeds 0-2): 90% at epoch 5 on each, 90.64 / 90.52 / 90.43%
    (docs/results-history.md; ablations in docs/recipes.md).
    """
    base = fast8_recipe()
    return replace(base, preset="fast5",
                   aug=replace(base.aug, flip_alternate=True, cutout_size=0, crop_padding=2),
                   init=InitConfig(whiten=True, whiten_frozen=True),
                   optim=replace(base.optim, ema_every=5),
                   train=replace(base.train, epochs=5, tta="flip_translate"))


def fast4_recipe() -> RunConfig:
    """fast5 over a 4-epoch one-cycle, plus: the trainable conv filters trained by Muon (core/muon.py; peak LR 0.12,
    airbench's momentum 0.6 and 3 Newton-Schulz steps), the rest by fast5's SGD; BatchNorm biases at 64x the LR (and
    weight decay / 64), as in Page's ResNet-9 and airbench; flip-only test-time augmentation (a third of
    flip_translate's evaluation); no evaluation after epoch 1, which cannot reach the target. BatchNorm scales train:
    freezing them at 1 (`norm_scale_frozen=true`, as an earlier fast did) was worth nothing at epoch 4 on 3 seeds and
    cost about a point at epochs 2-3. Measured: docs/recipes.md (the 4-epoch tables).
    """
    base = fast5_recipe()
    return replace(base, preset="fast4",
                   optim=replace(base.optim, norm_bias_lr_scale=64.0, muon_lr=0.12),
                   train=replace(base.train, epochs=4, tta="flip", eval_from=2))


# recipes are named by their epochs (fastN), so that none shares a name with a variant (`--variant=fast`)
RECIPES: dict[str, Callable[[], RunConfig]] = {"seed": seed_recipe, "fast4": fast4_recipe, "fast5": fast5_recipe,
                                              "fast8": fast8_recipe}
RENAMED = {"fast": "fast4"}  # old recipe names, as rows written before the rename still spell them


def base_preset(label: str) -> str:
    """The recipe a row's preset was built from: `fast4(whiten=false)` -> `fast4` (build_config writes the
    label), under its name of today (`fast(...)` -> `fast4`)."""
    return canonical_preset(label).split("(", 1)[0]


def canonical_preset(label: str) -> str:
    """A row's preset under today's recipe names: `fast(epochs=3)` -> `fast4(epochs=3)`; others as they are."""
    base, sep, rest = label.partition("(")
    return RENAMED.get(base, base) + sep + rest


# what a recipe is: an override of any of these makes another recipe, and the row says so in its preset
RECIPE_SECTIONS = ("aug", "init", "optim")
RECIPE_KEYS = ("model.norm", "model.dropout", "model.logit_scale", "train.epochs", "train.batch_size", "train.tta",
               "data.drop_last")
NOT_RECIPE = ("optim.lr_source",)  # a note on where lr_max came from


def is_recipe_key(key: str) -> bool:
    """Whether a dotted key (`optim.lr_max`) belongs to the recipe: changing it makes another recipe."""
    return (key.split(".", 1)[0] in RECIPE_SECTIONS or key in RECIPE_KEYS) and key not in NOT_RECIPE


def recipe_changes(before: RunConfig, after: RunConfig) -> list[str]:
    """`key=value` for each recipe key whose value differs (bare leaf names where unambiguous), in key order.

    Seeds, paths, devices, subsets, targets and the variant's execution settings are not the recipe: the
    leaderboard already keeps runs apart by those."""
    out = []
    for key in leaf_keys():
        section, name = key.split(".", 1) if "." in key else ("", key)
        if not is_recipe_key(key):
            continue
        old, new = getattr(getattr(before, section), name), getattr(getattr(after, section), name)
        if old != new:
            text = str(new).lower() if isinstance(new, bool) else f"{new:g}" if isinstance(new, float) else str(new)
            out.append(f"{short_key(key)}={text}")
    return out
