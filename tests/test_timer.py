"""The Timer (bench/core/timer.py) measures the clock between start and stop; what is on that clock
(docs/methodology.md), through `train()` on a fake clock.

The loop's clocks (`bench.core.timer`'s Timer, the warm-up's and the data wait's perf_counter) read one fake clock that
moves only when the harness does something: a training step costs STEP_S, an evaluation EVAL_S, the data-dependent
initialisation (whitening) WHITEN_S. Every duration the run reports is then an exact sum of those, and each rule
is an equation: warm-up off the clock, per-epoch evaluation off, the deciding evaluation on whenever it uses
test-time augmentation of any kind, whitening inside epoch 1, nothing after the target epoch. Powers of two: sums
are exact in floating point. The network is a tiny stand-in (the clock's rules are the loop's, not the model's).
"""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.core import step as step_mod
from bench.core import train as train_mod
from bench.core.timer import Timer
from bench.core.variants import build_config
from bench.run import train
from model.resnet import ConvBlock, norm_act_factory
from tests.conftest import random_cifar

STEP_S, EVAL_S, WHITEN_S = 1.0, 64.0, 1024.0
STEPS_PER_EPOCH = 2  # 64 training images, batch 32


class Net(nn.Module):
    """prep (conv 3->64, what whitening sets) -> global max pool -> linear 10."""

    def __init__(self, model_cfg):
        super().__init__()
        self.prep = ConvBlock(3, 64, norm_act_factory(model_cfg.norm, "eager", model_cfg.dropout))
        self.fc = nn.Linear(64, 10)
        self.logit_scale = model_cfg.logit_scale

    def forward(self, x):
        return self.fc(F.adaptive_max_pool2d(self.prep(x), 1).flatten(1)) * self.logit_scale


def fake_data(n_train=64, n_test=32):
    return random_cifar(n_train, n_test)


@pytest.fixture
def clock(monkeypatch):
    """The fake clock, and a record of what the harness did: `accs` scripts the test accuracy of each evaluation
    of the run (None: the real one), `log` lists ("step" | "eval" | "whiten", in_warmup)."""
    c = SimpleNamespace(now=1000.0, accs=None, log=[], in_warmup=False)
    fake_time = SimpleNamespace(perf_counter=lambda: c.now)
    monkeypatch.setattr("bench.core.timer.time", fake_time)
    monkeypatch.setattr(train_mod, "time", fake_time)
    monkeypatch.setattr(train_mod, "build_model",
                        lambda model_cfg, device, channels_last: Net(model_cfg).to(device))
    real_step, real_eval = step_mod.TrainStep.step, train_mod.evaluate
    real_warm_up, real_whiten = train_mod.warm_up, train_mod.init_from_data

    def step(self, x, y):
        real_step(self, x, y)
        c.now += STEP_S
        c.log.append(("step", c.in_warmup))

    def evaluate(*a, **k):
        loss, acc, preds, cheaper = real_eval(*a, **k)
        c.now += EVAL_S
        c.log.append(("eval", c.in_warmup))
        if c.accs is not None and not c.in_warmup:
            acc = c.accs[sum(1 for what, warm in c.log if what == "eval" and not warm) - 1]
        return loss, acc, preds, cheaper

    def warm_up(run):
        c.in_warmup = True
        try:
            return real_warm_up(run)
        finally:
            c.in_warmup = False

    def init_from_data(model, cfg, data):
        real_whiten(model, cfg, data)
        if cfg.init.whiten:  # called each run; it whitens (and costs) only when the recipe says so
            c.now += WHITEN_S
            c.log.append(("whiten", c.in_warmup))
    monkeypatch.setattr(step_mod.TrainStep, "step", step)
    monkeypatch.setattr(train_mod, "evaluate", evaluate)
    monkeypatch.setattr(train_mod, "warm_up", warm_up)
    monkeypatch.setattr(train_mod, "init_from_data", init_from_data)
    return c


def run(preset="seed", **over):
    base = {"train_subset": 64, "test_subset": 32, "batch_size": 32, "epochs": 3, "stop_at_target": "false",
            "precision": "fp32", "tta": "none", "target_acc": 0.9, "device": "cpu"}
    base.update(over)
    cfg = build_config(preset, "fast", "full", {k: str(v) for k, v in base.items()}, "cpu")
    return train(cfg, fake_data(), write=False, quiet=True)


def test_the_warm_up_is_off_the_clock(clock):
    """2 warm-up steps (an epoch's worth: the most it takes) and a warm-up evaluation: all in warmup_s, none in the
    training time or the time to target."""
    r = run(warmup_steps=2, epochs=2)
    assert [w for what, w in clock.log if what == "step"] == [True] * 2 + [False] * 2 * STEPS_PER_EPOCH
    assert r.warmup_s == 2 * STEP_S + EVAL_S
    assert [e["epoch_time_s"] for e in r.epochs] == [STEPS_PER_EPOCH * STEP_S] * 2
    assert r.train_time_s == 2 * STEPS_PER_EPOCH * STEP_S
    clock.log.clear()
    clock.accs = [0.95]
    reached = run(warmup_steps=2, epochs=2, stop_at_target="true")
    assert reached.target_epoch == 1 and reached.time_to_target_s == STEPS_PER_EPOCH * STEP_S


def test_per_epoch_evaluation_is_off_the_clock(clock):
    r = run(epochs=3)
    assert [e["epoch_time_s"] for e in r.epochs] == [STEPS_PER_EPOCH * STEP_S] * 3
    assert [e["train_time_s"] for e in r.epochs] == [k * STEPS_PER_EPOCH * STEP_S for k in (1, 2, 3)]
    assert [e["eval_time_s"] for e in r.epochs] == [EVAL_S] * 3
    assert r.train_time_s == 3 * STEPS_PER_EPOCH * STEP_S and r.eval_time_s == 3 * EVAL_S


@pytest.mark.parametrize("tta", ["none", "flip", "flip_translate"])
def test_the_deciding_evaluation_is_on_the_clock_under_any_tta(clock, tta):
    """Reached at epoch 2 of 3 (not stopping): the time to target is two epochs of steps, plus the deciding
    evaluation whenever it augments; the other evaluations stay off the clock, TTA or not."""
    clock.accs = [0.5, 0.95, 0.97]
    r = run(epochs=3, tta=tta)
    assert r.status == "reached" and r.target_epoch == 2
    assert r.time_to_target_s == 2 * STEPS_PER_EPOCH * STEP_S + (EVAL_S if tta != "none" else 0.0)
    assert r.train_time_s == 3 * STEPS_PER_EPOCH * STEP_S and r.eval_time_s == 3 * EVAL_S


def test_nothing_after_the_target_epoch_is_on_the_clock(clock):
    """stop_at_target: the run ends with the deciding epoch (no step, no evaluation after it). Without it, later
    epochs run and are reported, but the target epoch and its time stay the first reaching one's."""
    clock.accs = [0.5, 0.95, 0.97, 0.99]
    r = run(epochs=4, stop_at_target="true", tta="flip")
    assert r.target_epoch == 2 and r.epochs_run == 2 and len(r.epochs) == 2
    assert [what for what, _ in clock.log] == ["step"] * STEPS_PER_EPOCH + ["eval"] + ["step"] * STEPS_PER_EPOCH + [
        "eval"]
    assert r.train_time_s == 2 * STEPS_PER_EPOCH * STEP_S
    assert r.time_to_target_s == 2 * STEPS_PER_EPOCH * STEP_S + EVAL_S
    clock.log.clear()
    clock.accs = [0.5, 0.95, 0.97, 0.99]
    r = run(epochs=4, stop_at_target="false", tta="flip")
    assert r.target_epoch == 2 and r.epochs_run == 4
    assert r.time_to_target_s == 2 * STEPS_PER_EPOCH * STEP_S + EVAL_S
    assert r.train_time_s == 4 * STEPS_PER_EPOCH * STEP_S


def test_whitening_is_inside_epoch_ones_clock(clock):
    """fast's whitened first conv looks at the data: it is training, timed in epoch 1 (and only there)."""
    r = run("fast4", epochs=2, eval_from=1, whiten_images=64)
    assert [what for what, _ in clock.log].count("whiten") == 1
    assert [e["epoch_time_s"] for e in r.epochs] == [STEPS_PER_EPOCH * STEP_S + WHITEN_S, STEPS_PER_EPOCH * STEP_S]
    assert r.train_time_s == 2 * STEPS_PER_EPOCH * STEP_S + WHITEN_S


def test_timer_measures_the_clock_between_start_and_stop(monkeypatch):
    """A fake clock: on two busy cores a real sleep's measured length has no upper bound."""
    readings = iter([1000.0, 1000.25])
    monkeypatch.setattr("bench.core.timer.time", SimpleNamespace(perf_counter=lambda: next(readings)))
    timer = Timer(torch.device("cpu"))
    timer.start()
    assert timer.stop() == 0.25
