"""Every recipe key reaches what trains, and the keys that name a recipe are exactly the recipe keys.

`RECIPE_KEYS` below is this test's own list, by hand, of the keys whose change makes another recipe (with why the
others do not); it is checked against the config tree's keys (every key classified, every key a recipe function sets
is a recipe key) and against the labels build_config writes.

Reaching: each recipe (seed, fast, fast5, fast8, and any added to RECIPES) is built as `train()` builds it
(`setup_run`, the real network, the fast variant made fp32 NCHW, on a CPU), both as it is and with every recipe key
changed at once to another value (`changed`): for each key a check measures its effect on what was built, from the
outside: the loader's batches (crop, flip, cutout), the network's layers and logits, the initialisation (whitening,
Dirac), the optimisers' groups (LR, weight decay, momentum, Muon), the LR schedule against the one-cycle formula written
out here, the loss against label-smoothed cross-entropy written out here, the EMA's cadence and decay. The evaluation
keys (test-time augmentation, where evaluation starts) and the epochs are checked through `fit` itself, on a stand-in
network. Dropping a key (its default used) fails the built recipe or its changed twin; misrouting one (another key's
value used) fails the changed twin, whose values all differ.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.core import train as train_mod
from bench.core.config import RunConfig, leaf_keys
from bench.core.recipes import RECIPES, is_recipe_key
from bench.core.train import setup_run
from bench.core.variants import build_config
from pipeline import MEAN, STD
from pipeline.cifar10 import CIFAR10
from tests.test_timer import Net

# ---- which keys name a recipe ------------------------------------------------------------------------

RECIPE_KEYS = {  # what is trained, and how it is scored (test-time augmentation is part of the method)
    "aug.crop_padding", "aug.flip", "aug.cutout_size", "aug.cutout_prob", "aug.cutout_clip", "aug.flip_alternate",
    "model.norm", "model.dropout", "model.logit_scale",
    "init.whiten", "init.whiten_images", "init.whiten_eps", "init.whiten_frozen", "init.dirac",
    "optim.optimizer", "optim.lr_max", "optim.lr_div", "optim.final_div", "optim.pct_start", "optim.anneal",
    "optim.weight_decay", "optim.momentum", "optim.label_smoothing", "optim.ema_decay", "optim.ema_every",
    "optim.norm_scale_frozen", "optim.norm_bias_lr_scale", "optim.muon_lr", "optim.muon_momentum",
    "optim.muon_ns_steps",
    "train.batch_size", "train.epochs", "train.tta", "data.drop_last"}
NOT_RECIPE_KEYS = {
    "preset", "variant", "profile", "results_dir",  # names and paths
    "data.data_dir", "data.train_subset", "data.test_subset",  # which data and how much: the leaderboard's event
    "data.pipeline", "data.workers", "model.norm_kernel", "train.device", "train.precision", "train.channels_last",
    "train.compile", "train.sync_bn", "train.eval_batch_size",  # how it executes: the variant's axes
    "train.warmup_steps",  # untimed, and undone before the clock starts
    "train.seed",  # one run of the recipe among others
    "train.target_acc", "train.stop_at_target",  # the race, not the recipe
    "train.eval_from",  # which epochs are scored; a recipe may set it (fast: 2), its change keeps the name
    "optim.lr_source",  # a note on where lr_max came from
}
SET_BY_A_RECIPE_YET_NOT_A_RECIPE_KEY = {"preset", "optim.lr_source", "train.eval_from"}


def test_every_key_of_the_tree_is_classified_once():
    assert RECIPE_KEYS.isdisjoint(NOT_RECIPE_KEYS)
    assert RECIPE_KEYS | NOT_RECIPE_KEYS == set(leaf_keys())


def test_every_key_a_recipe_sets_is_a_recipe_key():
    """Derived from the tree: the keys where a recipe differs from the defaults (or from another recipe)."""
    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out
    configs = [flat(RunConfig().to_dict())] + [flat(make().to_dict()) for make in RECIPES.values()]
    set_by_recipes = {k for k in configs[0] if len({repr(c[k]) for c in configs}) > 1}
    assert {"train.tta", "train.epochs", "aug.cutout_size", "optim.ema_every"} <= set_by_recipes
    assert set_by_recipes - SET_BY_A_RECIPE_YET_NOT_A_RECIPE_KEY <= RECIPE_KEYS


def test_is_recipe_key_is_exactly_the_recipe_keys():
    assert {k for k in leaf_keys() if is_recipe_key(k)} == RECIPE_KEYS


STR_CHOICES = {"data.pipeline": ("device", "dataloader"), "model.norm": ("bn", "gn"),
               "model.norm_kernel": ("eager", "triton"), "optim.optimizer": ("adam", "sgd"),
               "optim.anneal": ("linear", "cos"), "train.precision": ("fp32", "bf16"), "train.compile": ("off", "default"),
               "train.tta": ("none", "flip", "flip_translate"), "train.device": ("auto", "cpu"),
               "profile": ("full", "smoke"), "variant": ("fast", "eager")}
# changed values chosen so that their effect can be measured (see the checks below)
MEASURABLE = {"aug.crop_padding": 3, "aug.cutout_size": 5, "aug.cutout_prob": 0.5, "init.whiten_images": 64,
              "init.whiten_eps": 0.1, "train.batch_size": 300, "model.dropout": 0.25, "train.epochs": 3}


def changed(key: str, value):
    """A valid value of `key` other than `value` (every recipe's own value differs from it)."""
    if key in MEASURABLE and MEASURABLE[key] != value:
        return MEASURABLE[key]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 if key in ("optim.lr_div", "optim.final_div") else (value / 2 if value else 0.1)
    choices = STR_CHOICES.get(key)
    if choices:
        return choices[(choices.index(value) + 1) % len(choices)]
    return value + "-changed"


def text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else repr(value) if isinstance(value, float) else str(value)


def value_of(cfg, key):
    section, _, name = key.rpartition(".")
    return getattr(getattr(cfg, section) if section else cfg, name)


@pytest.mark.parametrize("preset", list(RECIPES))
def test_the_label_names_a_recipe_change_and_only_that(preset):
    """One override at a time, of every key: the preset label gains `(key=value)` exactly for the recipe keys."""
    base = build_config(preset, "fast", "full", {}, "cpu")
    for key in leaf_keys():
        new = changed(key, value_of(base, key))
        cfg = build_config(preset, "fast", "full", {key: text(new)}, "cpu")
        leaf = key.rsplit(".", 1)[-1]
        if key in RECIPE_KEYS:
            assert cfg.preset.startswith(f"{preset}(") and f"{leaf}=" in cfg.preset, (key, cfg.preset)
        else:
            assert "(" not in cfg.preset, (key, cfg.preset)


# ---- each recipe key reaches what trains -------------------------------------------------------------

N_TRAIN = 1100  # recipes' batch 512 with drop_last: 2 batches; the changed twin's 300 without: 4, the last of 200


def probe_data() -> CIFAR10:
    """Training images whose augmentation can be read back: left half bright (150-255), right half dark (1-100), so a
    mirror shows; no pixel is 0 (0 is padding) and none normalises to exactly 0 (0 is a cutout hole). The labels
    are the images' indices, so an image is followed from epoch to epoch."""
    g = torch.Generator().manual_seed(0)
    left = torch.randint(150, 256, (N_TRAIN, 3, 32, 16), dtype=torch.uint8, generator=g)
    right = torch.randint(1, 101, (N_TRAIN, 3, 32, 16), dtype=torch.uint8, generator=g)
    return CIFAR10(torch.cat([left, right], 3), torch.arange(N_TRAIN),
                   torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(16) % 10)


def build(preset: str, twin: bool):
    cfg = build_config(preset, "fast", "full", {}, "cpu")
    over = {k: text(changed(k, value_of(cfg, k))) for k in sorted(RECIPE_KEYS)} if twin else {}
    over.update({"precision": "fp32", "channels_last": "false", "device": "cpu", "warmup_steps": "0"})
    cfg = build_config(preset, "fast", "full", over, "cpu")
    if twin:
        assert all(value_of(cfg, k) != value_of(build_config(preset), k) for k in RECIPE_KEYS)
    torch.manual_seed(0)
    return cfg, setup_run(cfg, probe_data(), quiet=True)


def normalised(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    return (images.double() / 255 - mean) / std


def read_epoch(run, epoch: int):
    """One epoch of the run's loader: batch sizes, and per image (by index) the hole (cutout) area, the padded rows
    or columns on its most padded side pair, and whether it came out mirrored."""
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    sizes, ids, area, padded, mirrored = [], [], [], [], []
    for x, idx in run.loader.epoch(epoch):
        sizes.append(len(x))
        hole = (x == 0).all(1)  # (B, 32, 32)
        u = torch.round((x.float() * std + mean) * 255)
        pad = (u == 0).all(1) & ~hole
        rows = ((pad | hole).all(2) & pad.any(2)).sum(1)
        cols = ((pad | hole).all(1) & pad.any(1)).sum(1)
        seen = (~pad & ~hole)[:, None].expand_as(u)
        half = lambda sl: (u[..., sl] * seen[..., sl]).sum((1, 2, 3)) / seen[..., sl].sum((1, 2, 3))  # noqa: E731
        ids.append(idx)
        area.append(hole.sum((1, 2)))
        padded.append(torch.maximum(rows, cols))
        mirrored.append(half(slice(6, 12)) < half(slice(20, 26)))
    order = torch.cat(ids).argsort()
    return sizes, *(torch.cat(t)[order] for t in (ids, area, padded, mirrored))


def check_batches(cfg, run):
    bs, n = cfg.train.batch_size, N_TRAIN
    full, rest = divmod(n, bs)
    expected = [bs] * full + ([rest] if rest and not cfg.data.drop_last else [])
    sizes, ids, *_ = read_epoch(run, 0)
    assert sizes == expected and len(run.loader) == len(expected)
    assert len(ids) == sum(expected) and len(ids.unique()) == len(ids)


def check_crop(cfg, run):
    *_, padded, _ = read_epoch(run, 0)
    assert int(padded.max()) == cfg.aug.crop_padding  # the largest shift seen (of about a thousand) is the padding


def check_cutout(cfg, run):
    a = cfg.aug
    _, _, area, _, _ = read_epoch(run, 0)
    if not a.cutout_size:
        assert int(area.max()) == 0
        return
    holed = area > 0
    assert int(area.max()) == a.cutout_size ** 2
    assert abs(holed.float().mean().item() - a.cutout_prob) < 0.1
    assert bool(((area > 0) & (area < a.cutout_size ** 2)).any()) == a.cutout_clip  # clipped at the border


def check_flip(cfg, run):
    a = cfg.aug
    e0, e1 = read_epoch(run, 0), read_epoch(run, 1)
    both = torch.zeros(2, N_TRAIN, dtype=torch.bool)  # images in both epochs (drop_last leaves some out of each)
    both[0, e0[1]], both[1, e1[1]] = True, True
    both = both.all(0)
    m0, m1 = (torch.zeros(N_TRAIN, dtype=torch.bool).index_put_((e[1],), e[-1])[both] for e in (e0, e1))
    if not a.flip:
        assert not bool(m0.any()) and not bool(m1.any())
        return
    assert 0.35 < m0.float().mean().item() < 0.65
    if a.flip_alternate:
        assert bool((m1 == ~m0).all())  # each image the opposite way in the next epoch
    else:
        assert 0.3 < (m1 != m0).float().mean().item() < 0.7


def norm_layers(model):
    return [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm))]


def check_norm(cfg, run):
    layers = norm_layers(run.plain)
    assert len(layers) == 8
    for m in layers:
        c = m.num_features if isinstance(m, nn.BatchNorm2d) else m.num_channels
        kind = "bn" if isinstance(m, nn.BatchNorm2d) else "ln" if m.num_groups == 1 else "gn"
        assert kind == cfg.model.norm and (kind != "gn" or m.num_groups == min(32, c))


def check_dropout(cfg, run):
    ps = [m.p for m in run.plain.modules() if isinstance(m, nn.Dropout)]
    assert ps == ([cfg.model.dropout] * 8 if cfg.model.dropout else [])


def check_logit_scale(cfg, run):
    seen = []
    hook = run.plain.fc.register_forward_hook(lambda m, i, out: seen.append(out))
    run.plain.eval()
    with torch.no_grad():
        logits = run.plain(normalised(run.data.train_images[:2]).float())
    hook.remove()
    torch.testing.assert_close(logits, seen[0] * cfg.model.logit_scale)


def check_whitening(cfg, run):
    """After epoch 1's initialisation: whitened from the first whiten_images images with whiten_eps, else as built."""
    i = cfg.init
    conv = run.plain.prep[0]
    before = conv.weight.detach().clone()
    train_mod.init_from_data(run.plain, cfg, run.data)
    w = conv.weight.detach().double()
    assert conv.weight.requires_grad == (not (i.whiten and i.whiten_frozen))
    if not i.whiten:
        assert torch.equal(conv.weight.detach(), before)
        return
    x = normalised(run.data.train_images[:i.whiten_images])
    patches = F.unfold(x, 3).transpose(1, 2).reshape(-1, 27)
    cov = torch.cov(patches.T, correction=0)
    lam = torch.linalg.eigvalsh(cov)
    torch.testing.assert_close(w[27:54], -w[:27])
    out = w[:27].flatten(1) @ cov @ w[:27].flatten(1).T
    torch.testing.assert_close(out, torch.diag(lam / (lam + i.whiten_eps)), atol=2e-4, rtol=1e-3)


def check_dirac(cfg, run):
    prep = set(map(id, run.plain.prep.modules()))
    for conv in (m for m in run.plain.modules() if isinstance(m, nn.Conv2d) and id(m) not in prep):
        n = min(conv.in_channels, conv.out_channels)
        w = conv.weight.detach()[:n]
        identity = bool((w.flatten(1) != 0).sum(1).eq(1).all() and (w[range(n), range(n), 1, 1] == 1).all())
        assert identity == cfg.init.dirac


def one_cycle_reference(o, total: int) -> list[float]:
    """OneCycleLR's two phases written out: start lr_max/lr_div, peak lr_max at step pct_start*total - 1, end at the
    start LR / final_div at the last step; linear or cosine in between."""
    start, end = o.lr_max / o.lr_div, o.lr_max / o.lr_div / o.final_div
    peak_at = max(o.pct_start * total - 1, 1e-12)

    def ramp(a, b, t):
        return a + (b - a) * t if o.anneal == "linear" else b + (a - b) / 2 * (1 + math.cos(math.pi * t))
    return [ramp(start, o.lr_max, s / peak_at) if s <= peak_at else
            ramp(o.lr_max, end, (s - peak_at) / (total - 1 - peak_at)) for s in range(total)]


def check_schedule(cfg, run):
    total = cfg.train.epochs * len(run.loader)
    assert run.step.lr_values == pytest.approx(one_cycle_reference(cfg.optim, total), rel=1e-6)


def check_param_groups(cfg, run):
    """Every trainable parameter in exactly one optimiser group, with the LR, weight decay and momentum the recipe
    gives its kind: Muon's conv filters, the norm biases (x norm_bias_lr_scale), the rest; frozen ones in none."""
    o, step = cfg.optim, run.step
    opt_type = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[o.optimizer]
    assert type(step.opt) is opt_type and (o.optimizer == "adam" or step.opt.defaults["nesterov"])
    where = {}
    for opt in [step.opt] + ([step.muon] if step.muon is not None else []):
        for group in opt.param_groups:
            for p in group["params"]:
                assert id(p) not in where
                where[id(p)] = (opt, group)
    biases = {id(m.bias) for m in norm_layers(run.plain)}
    scales = {id(m.weight) for m in norm_layers(run.plain)}
    lr0 = o.lr_max / o.lr_div
    assert (step.muon is not None) == (o.muon_lr > 0)
    for name, p in run.plain.named_parameters():
        if not p.requires_grad:
            assert id(p) not in where, name
            continue
        opt, group = where[id(p)]
        if o.muon_lr and p.ndim == 4:
            assert opt is step.muon, name
            assert float(group["lr"]) == pytest.approx(lr0 * o.muon_lr / o.lr_max, rel=1e-6), name
            assert (group["momentum"], group["ns_steps"]) == (o.muon_momentum, o.muon_ns_steps), name
            continue
        s = o.norm_bias_lr_scale if id(p) in biases else 1.0
        assert opt is step.opt, name
        assert float(group["lr"]) == pytest.approx(lr0 * s, rel=1e-6), name
        assert group["weight_decay"] == pytest.approx(o.weight_decay / s), name
        if o.optimizer == "sgd":
            assert group["momentum"] == o.momentum, name
    frozen = {id(p) for p in run.plain.parameters() if not p.requires_grad}
    assert (scales <= frozen) == o.norm_scale_frozen and (scales.isdisjoint(frozen)) == (not o.norm_scale_frozen)
    if o.norm_scale_frozen:
        assert all(bool((m.weight == 1).all()) for m in norm_layers(run.plain))


def check_loss(cfg, run):
    """The step's loss is label-smoothed cross-entropy: (1 - e) * NLL + e * the mean over classes of -log p."""
    x, y = normalised(run.data.train_images[:4]).float(), torch.tensor([0, 3, 5, 9])
    run.plain.train()
    torch.manual_seed(5)  # dropout: the same masks in both forwards
    loss, _ = run.step._forward(x, y)
    torch.manual_seed(5)
    logp = torch.log_softmax(run.plain(x).double(), 1)
    e = cfg.optim.label_smoothing
    expected = (-(1 - e) * logp[torch.arange(4), y] - e * logp.mean(1)).mean()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)


def check_ema(cfg, run):
    """The EMA is what is evaluated; it moves every ema_every steps by 1 - ema_decay**ema_every (the step's own
    cadence: the forward, backward and update left out)."""
    o, step = cfg.optim, run.step
    if not o.ema_decay:
        assert step.ema is None and run.eval_model is run.model
        return
    assert run.eval_model is step.ema.module
    step._run = lambda x, y: None
    counts = []
    for _ in range(2 * o.ema_every):
        step.step(None, None)
        counts.append(step.ema.updates)
    assert counts == [(k + 1) // o.ema_every for k in range(2 * o.ema_every)]
    with torch.no_grad():
        for p in run.plain.parameters():
            p.fill_(1.0)
        for p in step.ema.module.parameters():
            p.zero_()
    for _ in range(o.ema_every):
        step.step(None, None)
    for p in step.ema.module.parameters():
        torch.testing.assert_close(p.detach(), torch.full_like(p, 1 - o.ema_decay ** o.ema_every))


BUILT_CHECKS = {  # key -> the check that measures its effect on what setup_run built
    "aug.crop_padding": check_crop, "aug.flip": check_flip, "aug.flip_alternate": check_flip,
    "aug.cutout_size": check_cutout, "aug.cutout_prob": check_cutout, "aug.cutout_clip": check_cutout,
    "train.batch_size": check_batches, "data.drop_last": check_batches,
    "model.norm": check_norm, "model.dropout": check_dropout, "model.logit_scale": check_logit_scale,
    "init.whiten": check_whitening, "init.whiten_images": check_whitening, "init.whiten_eps": check_whitening,
    "init.whiten_frozen": check_whitening, "init.dirac": check_dirac,
    "optim.lr_max": check_schedule, "optim.lr_div": check_schedule, "optim.final_div": check_schedule,
    "optim.pct_start": check_schedule, "optim.anneal": check_schedule, "train.epochs": check_schedule,
    "optim.optimizer": check_param_groups, "optim.weight_decay": check_param_groups,
    "optim.momentum": check_param_groups, "optim.norm_scale_frozen": check_param_groups,
    "optim.norm_bias_lr_scale": check_param_groups, "optim.muon_lr": check_param_groups,
    "optim.muon_momentum": check_param_groups, "optim.muon_ns_steps": check_param_groups,
    "optim.label_smoothing": check_loss, "optim.ema_decay": check_ema, "optim.ema_every": check_ema,
}
FIT_CHECKED = {"train.tta", "train.eval_from", "train.epochs", "optim.ema_every"}  # test_fit_... below


def test_every_recipe_key_has_a_check():
    assert set(BUILT_CHECKS) | FIT_CHECKED == {k for k in leaf_keys() if is_recipe_key(k)} | {"train.eval_from"}


# in an order where no check disturbs a later one: whitening and the loss change weights, the EMA check last
ORDER = [check_batches, check_crop, check_cutout, check_flip, check_norm, check_dropout, check_dirac,
         check_logit_scale, check_schedule, check_param_groups, check_loss, check_whitening, check_ema]


@pytest.mark.parametrize("twin", [False, True], ids=["as-is", "every-key-changed"])
@pytest.mark.parametrize("preset", list(RECIPES))
def test_every_recipe_key_reaches_what_trains(preset, twin):
    assert set(BUILT_CHECKS.values()) == set(ORDER)
    cfg, run = build(preset, twin)
    for check in ORDER:
        keys = sorted(k for k, c in BUILT_CHECKS.items() if c is check)
        try:
            check(cfg, run)
        except AssertionError as e:
            raise AssertionError(f"{check.__name__} ({', '.join(keys)}): {e}") from None


@pytest.mark.parametrize("preset", list(RECIPES))
def test_fit_runs_each_recipes_epochs_evaluation_start_tta_and_ema_cadence(preset, monkeypatch):
    """Through fit, on a stand-in network: every epoch of the recipe runs, evaluation starts at its eval_from (the
    last epoch always scored), each evaluation feeds its TTA's views, the EMA moves every ema_every steps."""
    cfg = build_config(preset, "fast", "full", {"train_subset": "32", "test_subset": "16", "batch_size": "16",
                                                "precision": "fp32", "stop_at_target": "false", "device": "cpu"})
    monkeypatch.setattr(train_mod, "build_model", lambda m, device, channels_last: Net(m))
    views, emas = [], []
    real_views = train_mod.tta_views
    monkeypatch.setattr(train_mod, "tta_views", lambda x, tta: views.append(len(real_views(x, tta))) or
                        real_views(x, tta))

    class RecordingEMA(train_mod.WeightEMA):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            emas.append(self)
    monkeypatch.setattr(train_mod, "WeightEMA", RecordingEMA)
    g = torch.Generator().manual_seed(0)
    data = CIFAR10(torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(32) % 10,
                   torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(16) % 10)
    r = train_mod.fit(cfg, data, quiet=True)
    t, o = cfg.train, cfg.optim
    assert r.epochs_run == t.epochs == len(r.epochs)
    scored = [e["epoch"] for e in r.epochs if e["test_acc"] is not None]
    assert scored == [e for e in range(1, t.epochs + 1) if e >= t.eval_from or e == t.epochs]
    assert views == [{"none": 1, "flip": 2, "flip_translate": 6}[t.tta]] * len(scored)  # one test batch each
    if o.ema_decay:
        assert len(emas) == 1 and emas[0].updates == t.epochs * 2 // o.ema_every
    else:
        assert emas == []
