"""The weight EMA on the device: every k steps it equals a reference EMA applied every k steps, and a reset forgets
its updates (the next one copies the model outright)."""
import torch

from bench.core.ema import WeightEMA


def test_ema_every_k_equals_a_reference_ema_applied_every_k_steps():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    ema = WeightEMA(model, decay=0.8, every=3)
    expected = None
    for step in range(10):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model(torch.randn(5, 4))  # moves the BN statistics
        ema.update(step)
        if (step + 1) % 3 == 0:
            now = {k: v.clone() for k, v in model.state_dict().items()}
            expected = now if expected is None else {
                k: (v + (now[k] - v) * (1 - 0.8 ** 3)) if v.is_floating_point() else now[k] for k, v in expected.items()}
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(v, expected[k], msg=k)


def test_the_ema_forgets_its_updates_on_reset():
    model = torch.nn.Linear(3, 2)
    ema = WeightEMA(model, 0.5, 1)
    ema.update(0)
    with torch.no_grad():
        model.weight.fill_(4.0)
    ema.reset()
    ema.update(0)
    assert ema.updates == 1 and torch.equal(ema.module.weight, model.weight)  # copied outright, not averaged
