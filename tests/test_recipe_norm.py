"""BatchNorm training settings of a recipe: frozen norm scales and the norm biases' LR multiplier, checked through
the step and the loop training uses (TrainStep, train), against Nesterov SGD's first update written out by hand."""
import pytest
import torch
import torch.nn.functional as F

from bench.core.step import TrainStep, norm_biases, trainable
from bench.core.train import init_model
from bench.core.variants import build_config
from bench.run import train
from model.build import build_model

LR, WD, MOMENTUM, SCALE = 0.1, 5e-4, 0.9, 64.0


def sgd_cfg(**more):
    over = {"optim.optimizer": "sgd", "optim.lr_max": str(LR), "optim.lr_div": "1", "optim.final_div": "1",
            "optim.weight_decay": str(WD), "optim.momentum": str(MOMENTUM), "optim.ema_decay": "0",
            "optim.label_smoothing": "0", "train.precision": "fp32", "train.channels_last": "false",
            "init.whiten": "false", "train.epochs": "1", "optim.norm_bias_lr_scale": "1",
            "optim.norm_scale_frozen": "false", "optim.muon_lr": "0"}  # fast's: 64, false, 0.12; each test sets its own
    over.update(more)
    return build_config("fast4", None, "full", over)


def test_norm_biases_take_the_scaled_lr_and_the_divided_weight_decay():
    """One step from rest: Nesterov SGD moves p by -lr * (1 + momentum) * (grad + wd * p); the norm biases by
    -(lr * s) * (1 + momentum) * (grad + wd / s * p); every other parameter by the unscaled rule."""
    cfg = sgd_cfg(**{"optim.norm_bias_lr_scale": str(SCALE)})
    torch.manual_seed(0)
    model = build_model(cfg.model, torch.device("cpu"), False).double()
    with torch.no_grad():  # nonzero biases, so the weight-decay term shows in the update
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, y = torch.randn(8, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (8,))
    ref = {n: p.detach().clone() for n, p in model.named_parameters()}
    F.cross_entropy(model(x), y).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    # the network's norm layers' shifts, found here by their type (not by norm_biases, the code under test)
    biases = {id(m.bias) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert len(biases) == 8  # one per norm layer of the network
    assert {id(p) for p in norm_biases(model)} == biases
    step = TrainStep(model, cfg, torch.device("cpu"), 1, 1)
    step.step(x, y)
    for name, p in model.named_parameters():
        s = SCALE if id(p) in biases else 1.0
        expected = ref[name] - LR * s * (1 + MOMENTUM) * (grads[name] + WD / s * ref[name])
        torch.testing.assert_close(p.detach(), expected, msg=lambda m: f"{name} (lr scale {s:g}): {m}")


def test_without_the_scale_there_is_one_group():
    cfg = sgd_cfg()
    model = build_model(cfg.model, torch.device("cpu"), False)
    step = TrainStep(model, cfg, torch.device("cpu"), 1, 1)
    assert len(step.opt.param_groups) == 1 and step.scaled == []


def test_frozen_norm_scales_stay_at_one_through_training(tmp_path, cifar):
    """The loop's own path (init_model inside setup): scales set to 1, out of the optimiser, unchanged by steps."""
    cfg = build_config("fast4", "fast", "full", {
        "train_subset": "256", "test_subset": "200", "batch_size": "64", "epochs": "1", "results_dir": str(tmp_path),
        "norm_scale_frozen": "true", "norm_bias_lr_scale": str(SCALE), "tta": "none"}, "cpu")
    r = train(cfg, cifar, quiet=True, write=False)
    model = r.model
    scales = [m.weight for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(scales) == 8 and all(torch.equal(w, torch.ones_like(w)) for w in scales)
    assert all(not w.requires_grad for w in scales)
    biases = [m.bias for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(b.abs().max() > 0 for b in biases)  # the biases did train


def test_init_model_freezes_the_scales_only_when_asked():
    for frozen in (False, True):
        cfg = sgd_cfg(**{"optim.norm_scale_frozen": str(frozen).lower()})
        model = build_model(cfg.model, torch.device("cpu"), False)
        with torch.no_grad():
            model.prep[1][0].weight.fill_(3.0)
        init_model(model, cfg)
        w = model.prep[1][0].weight
        assert w.requires_grad is not frozen
        assert torch.all(w == (1.0 if frozen else 3.0))
        assert (id(w) in {id(p) for p in trainable(model)}) is not frozen


@pytest.mark.parametrize("bad", ["0", "-1"])
def test_the_scale_must_be_positive(bad):
    from bench.core.config import ConfigError
    with pytest.raises(ConfigError, match="norm_bias_lr_scale"):
        sgd_cfg(**{"optim.norm_bias_lr_scale": bad})
