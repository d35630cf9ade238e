"""The step's and the EMA's counters start over where a run, or a capture, starts: after the warm-up (setup_run's
`warm_up` and TrainStep.reset) and around a whole-step capture (StepGraph). A leftover count shifts the LR schedule
(step index), the EMA's cadence (host step count) or its first update (update count), the epoch's loss record, or
the fp16 loss scale, and the timed run is no longer the run the warm-up claims to leave untouched."""
import pytest
import torch

from bench.core import train as train_mod
from bench.core.ema import WeightEMA
from bench.core.step import StepGraph, TrainStep, run_directly
from bench.core.variants import build_config
from tests.test_timer import Net, fake_data


@pytest.fixture
def stand_in(monkeypatch):
    """The loop builds the small stand-in network; the list counts the steps taken (warm-up ones included)."""
    steps = []
    monkeypatch.setattr(train_mod, "build_model", lambda m, device, channels_last: Net(m).to(device))
    real = TrainStep.step
    monkeypatch.setattr(TrainStep, "step", lambda self, x, y: steps.append(1) or real(self, x, y))
    return steps


def cfg_with(**over):
    base = {"train_subset": 64, "test_subset": 32, "batch_size": 16, "epochs": 2, "stop_at_target": "false",
            "precision": "fp32", "tta": "none", "ema_decay": 0.9, "ema_every": 3, "device": "cpu", "eval_from": 1}
    base.update(over)
    return build_config("fast4", "fast", "full", {k: str(v) for k, v in base.items()}, "cpu")


def test_a_warm_up_leaves_every_counter_at_zero(stand_in):
    run = train_mod.setup_run(cfg_with(warmup_steps=4), fake_data(), quiet=True)
    assert len(stand_in) == 4  # the warm-up did step (and so moved every counter)
    step = run.step
    assert (int(step.i), int(step.j), step.steps, int(step.correct)) == (0, 0, 0, 0)
    assert not step.losses.any() and step.ema.updates == 0
    states = [v for opt in step.opts for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
    assert states and not any(bool(v.any()) for v in states)  # momentum (and Muon's) as a fresh optimizer's


def test_a_run_after_a_warm_up_trains_as_one_without(stand_in):
    """Same seed, with and without 4 warm-up steps: the same losses, weights and EMA (scored each epoch), step for
    step. EMA every 3 steps over 4 per epoch: a leftover step count or update count would show in both epochs."""
    runs = {}
    for warm in (0, 4):
        emas = []
        real = train_mod.WeightEMA

        class Recording(real):
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                emas.append(self)
        train_mod.WeightEMA = Recording
        try:
            r = train_mod.fit(cfg_with(warmup_steps=warm), fake_data(), quiet=True)
        finally:
            train_mod.WeightEMA = real
        runs[warm] = (r, emas[0])
    (a, ema_a), (b, ema_b) = runs[0], runs[4]
    assert ema_a.updates == ema_b.updates == 8 // 3
    for ea, eb in zip(a.epochs, b.epochs):
        assert (eb["train_loss"], eb["test_loss"], eb["lr"]) == pytest.approx(
            (ea["train_loss"], ea["test_loss"], ea["lr"]), rel=1e-6)
    for x, y in zip(list(a.model.state_dict().values()) + list(ema_a.module.state_dict().values()),
                    list(b.model.state_dict().values()) + list(ema_b.module.state_dict().values())):
        torch.testing.assert_close(y, x)


def test_the_loss_scale_starts_over_after_a_warm_up():
    """fp16: a warm-up's overflow halves the loss scale and its clean steps count toward doubling it; after reset
    the scale and the count are a new scaler's (2**16, 0), in the scaler's own tensors."""
    cfg = cfg_with(precision="fp16")
    model = Net(cfg.model)
    step = TrainStep(model, cfg, torch.device("cpu"), 4, 8, WeightEMA(model, 0.9, 3))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g)
    step.step(x, y)
    step.step(x, y)
    step.scaler.update(8.0)  # as an overflow streak would leave it
    scale = step.scaler._scale
    assert step.scaler.state_dict()["scale"] == 8.0
    step.reset()
    state = step.scaler.state_dict()
    assert (state["scale"], state["_growth_tracker"]) == (2.0 ** 16, 0) and step.scaler._scale is scale


def test_a_capture_puts_back_the_counters_its_extra_calls_moved():
    """StepGraph's first call runs the capture's warm-up calls (3) and, on the CPU stand-in, the captured call: the
    counters it was given are back where they were before it replays once for its own batch."""
    i = torch.zeros((), dtype=torch.long)
    record = torch.zeros(4)
    calls = []

    def step_fn(x, y):
        calls.append(1)
        record[i] = x.sum()
        i.add_(1)
    graph = StepGraph(step_fn, warmup=3, capture=run_directly, counters=(i, record))
    graph(torch.ones(2), torch.zeros(2))
    assert len(calls) == 5 and int(i) == 1 and record.tolist() == [2.0, 0.0, 0.0, 0.0]
    graph(torch.full((2,), 3.0), torch.zeros(2))
    assert int(i) == 2 and record.tolist() == [2.0, 6.0, 0.0, 0.0]
