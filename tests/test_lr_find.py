"""LR range test on problems whose good LR range is known; state restored bit for bit."""
import math

import pytest
import torch
from torch import nn

from bench.tools.lr_find import lr_range_test, lr_schedule, suggest


def separable_problem(n=512, d=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, 2, generator=g)
    x = torch.randn(n, d, generator=g)
    y = (x @ w).argmax(1)
    return [(x[i:i + 64], y[i:i + 64]) for i in range(0, n, 64)]


def test_schedules():
    exp = lr_schedule(1e-6, 1.0, 7, "exp")
    assert exp[0] == pytest.approx(1e-6) and exp[-1] == pytest.approx(1.0) and exp[3] == pytest.approx(1e-3)
    lin = lr_schedule(0.0, 1.0, 5, "linear")
    assert list(lin) == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ValueError, match="exp or linear"):
        lr_schedule(1e-3, 1.0, 5, "cubic")


def test_suggestion_is_at_the_steepest_descent():
    lrs = list(10.0 ** torch.linspace(-5, 0, 51).numpy())
    losses = [2.0 - 1.5 / (1 + math.exp(-4 * (math.log10(lr) + 2.5))) for lr in lrs]  # steepest at 10^-2.5
    assert suggest(lrs, losses, 5, 5) == pytest.approx(10 ** -2.5, rel=0.1)


def test_sgd_on_separable_data_suggests_a_working_lr():
    """Plain SGD on a linear softmax model: LRs ~0.1-10 train well, 1e-4 barely moves, 1e3 diverges."""
    torch.manual_seed(0)
    model = nn.Linear(20, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    res = lr_range_test(model, opt, separable_problem(), start_lr=1e-5, end_lr=1e4, num_iter=120)
    assert 0.05 <= res.suggestion <= 20, res.suggestion
    assert res.min_loss_lr > res.suggestion / 100


def test_divergence_stops_the_sweep_early():
    torch.manual_seed(0)
    model = nn.Linear(20, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    res = lr_range_test(model, opt, separable_problem(), start_lr=1e-3, end_lr=1e8, num_iter=200)
    assert res.stopped_early and len(res.lrs) < 200
    assert res.lrs[-1] < 1e8


def test_state_is_restored_bit_for_bit():
    from model import CustomResNet
    torch.manual_seed(0)
    model = CustomResNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()  # non-empty optimizer state
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt_before = {k: {n: t.clone() if torch.is_tensor(t) else t for n, t in v.items()}
                  for k, v in opt.state_dict()["state"].items()}
    lrs_before = [g["lr"] for g in opt.param_groups]
    res = lr_range_test(model, opt, [(x, y)], start_lr=1e-4, end_lr=1.0, num_iter=4)
    assert len(res.lrs) == 4
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights, BN running stats, num_batches_tracked
    for k, v in opt.state_dict()["state"].items():
        assert all(torch.equal(opt_before[k][n], t) if torch.is_tensor(t) else opt_before[k][n] == t for n, t in v.items())
    assert [g["lr"] for g in opt.param_groups] == lrs_before


def test_suggestion_ignores_a_fall_after_the_minimum():
    """A bounded loss (label smoothing) can blow up and fall again without diverging: the later, steeper
    fall is past the minimum and must not be suggested."""
    lrs = list(10.0 ** torch.linspace(-3, 1, 81).numpy())
    losses = []
    for lr in lrs:
        x = math.log10(lr)
        if x <= -0.5:
            losses.append(2.3 - 0.3 / (1 + math.exp(-3 * (x + 1.5))))  # gentle fall, steepest at 10^-1.5
        else:
            losses.append(2.3 + 0.5 * math.exp(-8 * (x - 0.2) ** 2) - 0.15 * (x + 0.5))  # bump, then a steep fall
    assert min(range(81), key=losses.__getitem__) < 81 - 5  # the minimum is inside the sweep...
    assert losses[-1] > min(losses)  # ...and the tail falls back towards it
    assert suggest(lrs, losses, 5, 5) == pytest.approx(10 ** -1.5, rel=0.15)
