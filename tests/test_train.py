"""What `fit` and `evaluate` really do on a tiny real subset: whitening in epoch 1 (eps included), the EMA copy
scored, mirrored TTA views, divergence judged against the run's first loss, not the epoch's.

The network is swapped for `TinyNet` (the ResNet-9's own prep block, then pool and linear) so that each run takes
seconds on a CPU; everything around it (loader, init, step, EMA, evaluation, divergence rule) is the real code.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.core import train as train_mod
from bench.core.train import evaluate, fit
from bench.core.variants import build_config
from model.resnet import ConvBlock, norm_act_factory
from pipeline import MEAN, STD


class TinyNet(nn.Module):
    """prep (conv 3->64, norm, ReLU: what whitening sets) -> global max pool -> linear 10, logits * logit_scale."""

    def __init__(self, norm_act, logit_scale: float = 1.0):
        super().__init__()
        self.prep = ConvBlock(3, 64, norm_act)
        self.fc = nn.Linear(64, 10)
        self.logit_scale = logit_scale

    def forward(self, x):
        return self.fc(F.adaptive_max_pool2d(self.prep(x), 1).flatten(1)) * self.logit_scale


@pytest.fixture
def tiny_net(monkeypatch):
    """bench.core.train builds TinyNets; the list holds every one built, in order."""
    built = []

    def build(model_cfg, device, channels_last):
        m = TinyNet(norm_act_factory(model_cfg.norm, "eager", model_cfg.dropout), model_cfg.logit_scale).to(device)
        built.append(m.to(memory_format=torch.channels_last) if channels_last else m)
        return built[-1]
    monkeypatch.setattr(train_mod, "build_model", build)
    return built


def fast_cfg(**over):
    """The fast recipe as `fast` runs it on a CPU (fp32 channels-last, device loader), on 128 + 64 real images."""
    base = {"train_subset": 128, "test_subset": 64, "batch_size": 64, "epochs": 1, "precision": "fp32",
            "whiten_images": 128, "stop_at_target": "false", "device": "cpu"}
    base.update(over)
    return build_config("fast4", "fast", "full", {k: str(v) for k, v in base.items()}, "cpu")


def normalised_f64(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> (x / 255 - mean) / std in fp64: a reference apart from pipeline.normalize."""
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    return (images.double() / 255 - mean) / std


def test_fit_whitens_the_prep_conv_in_epoch_one_with_the_configured_eps(tiny_net, cifar):
    """After a run, the frozen prep filters W map the patch covariance C to W C W^T = diag(l / (l + eps)), the
    eigenvalues l of C: whitened (not the random init) and with the recipe's eps (0.1 here: far from l / l = 1)."""
    eps = 0.1
    r = fit(fast_cfg(whiten_eps=eps), cifar, quiet=True)
    assert r.status == "not_reached" and r.epochs_run == 1
    w = r.model.prep[0].weight.detach().double()  # (64, 3, 3, 3)
    torch.testing.assert_close(w[27:54], -w[:27])
    patches = F.unfold(normalised_f64(cifar.train_images[:128]), 3).transpose(1, 2).reshape(-1, 27)
    cov = torch.cov(patches.T, correction=0)
    lam = torch.linalg.eigvalsh(cov)  # ascending, as whiten_conv_ orders its filters
    out = w[:27].flatten(1) @ cov @ w[:27].flatten(1).T
    torch.testing.assert_close(out, torch.diag(lam / (lam + eps)), atol=2e-4, rtol=1e-3)
    assert float(lam.min()) < eps / 5  # so eps matters: without it that direction would come out at 1


def test_fit_scores_the_ema_copy_not_the_raw_weights(tiny_net, cifar, monkeypatch):
    emas = []

    class RecordingEMA(train_mod.WeightEMA):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            emas.append(self)
    monkeypatch.setattr(train_mod, "WeightEMA", RecordingEMA)
    cfg = fast_cfg(ema_decay=0.9, ema_every=1, epochs=2, batch_size=32, tta="none")  # 8 steps: a one-cycle
    r = fit(cfg, cifar, quiet=True)
    (ema,) = emas
    assert ema.updates == 8  # 4 steps per epoch, every step
    data, dev = r.data, torch.device("cpu")
    ema_loss, ema_acc, _, _ = evaluate(ema.module, data.test_images, data.test_labels, cfg, dev)
    raw_loss, _, _, _ = evaluate(r.model, data.test_images, data.test_labels, cfg, dev)
    assert abs(ema_loss - raw_loss) > 1e-4  # the two differ, so the log tells which was scored
    assert r.epochs[-1]["test_loss"] == pytest.approx(ema_loss, rel=1e-6)
    assert r.epochs[-1]["test_acc"] == ema_acc


def test_evaluate_feeds_the_model_the_six_tta_views(cifar):
    """Views: the image, its mirror, then (down-right shift, its mirror, up-left shift, its mirror), zero-padded;
    built here by index arithmetic on the padded image, not by flip."""
    seen = []

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 32 * 32, 10)

        def forward(self, x):
            seen.append(x.clone())
            return self.fc(x.flatten(1))
    cfg = build_config("seed", "eager", "full", {"tta": "flip_translate", "eval_batch_size": "16"}, "cpu")
    images, labels = cifar.test_images[:16], cifar.test_labels[:16]
    evaluate(Recorder(), images, labels, cfg, torch.device("cpu"))
    assert len(seen) == 6
    x = normalised_f64(images)
    pad = F.pad(x, (1, 1, 1, 1))  # (N, 3, 34, 34); zero is the mean after normalisation
    rev = torch.arange(31, -1, -1)
    ar = torch.arange(32)
    expected = []
    for dy, dx in ((1, 1), (0, 0), (2, 2)):  # the image itself, then the two shifts
        v = pad[:, :, ar + dy][..., ar + dx]
        expected += [v, v[..., rev]]
    for i, (got, want) in enumerate(zip(seen, expected)):
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0, msg=lambda m, i=i: f"view {i}: {m}")
        assert not torch.equal(got, seen[i ^ 1])  # a view and its mirror differ on real images


def test_divergence_in_epoch_two_is_judged_against_the_runs_first_loss(tiny_net, cifar):
    """Logits scaled by 1e6 after epoch 1: epoch 2's first loss is finite and far above 100x the run's first loss,
    so the run diverges at (2, 1). Judged against epoch 2's own first loss it never could at step 1."""
    def blow_up(epochs):
        if len(epochs) == 1:
            tiny_net[0].logit_scale = 1e6
    r = fit(fast_cfg(epochs=3, tta="none"), cifar, quiet=True, on_epoch=blow_up)
    assert r.status == "diverged" and r.diverged_at == (2, 1), (r.diverged_at, r.diverged_reason)
    assert "above" in r.diverged_reason  # the finite bound, not a NaN
    assert len(r.epochs) == 1 and math.isfinite(r.epochs[0]["train_loss"])


def test_cheaper_tta_accuracies_are_those_modes_own(cifar):
    """One flip_translate evaluation also reports what tta=none and tta=flip score: the same numbers as
    evaluating with those modes, since their views are its first ones."""
    from bench.core.train import TTA_VIEWS, evaluate, tta_views
    x0 = torch.zeros(1, 3, 4, 4)
    assert {m: len(tta_views(x0, m)) for m in TTA_VIEWS} == TTA_VIEWS
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))  # views change its answers
    images = cifar.test_images[:96]
    cfgs = {m: build_config("seed", "eager", "full", {"tta": m, "eval_batch_size": "40"}, "cpu")
            for m in ("none", "flip", "flip_translate")}
    preds = {m: evaluate(model, images, cifar.test_labels[:96], c, torch.device("cpu"))[2] for m, c in cfgs.items()}
    # labels that each mode gets right on a different third, so the three accuracies differ
    labels = torch.cat([preds["none"][:32], preds["flip"][32:64], preds["flip_translate"][64:]])
    dev = torch.device("cpu")
    own = {m: evaluate(model, images, labels, c, dev)[1] for m, c in cfgs.items()}
    assert len(set(own.values())) == 3
    _, acc, _, cheaper = evaluate(model, images, labels, cfgs["flip_translate"], dev)
    assert acc == own["flip_translate"] and cheaper == {"none": own["none"], "flip": own["flip"]}
    assert evaluate(model, images, labels, cfgs["flip"], dev)[3] == {"none": own["none"]}
    assert evaluate(model, images, labels, cfgs["none"], dev)[3] == {}


def test_tta_views():
    from bench.core.train import tta_views
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    assert len(tta_views(x, "none")) == 1 and len(tta_views(x, "flip")) == 2
    views = tta_views(x, "flip_translate")
    assert len(views) == 6 and all(v.shape == x.shape for v in views)
    assert torch.equal(views[2][..., 1:, 1:], x[..., :3, :3]) and (views[2][..., 0, :] == 0).all()
    assert torch.equal(views[4][..., :3, :3], x[..., 1:, 1:])
