"""The device-resident step (bench/core/step.py) against the previous one, and no host reads inside an epoch."""
import contextlib

import pytest
import torch

from bench.core.ema import WeightEMA
from bench.core.step import PlainStep, TrainStep, one_cycle_lrs
from bench.core.variants import build_config
from model.build import build_model

STEPS = 4


def small_cfg(optimizer: str, ema: bool, **more):
    over = {"optim.optimizer": optimizer, "optim.ema_decay": "0.9" if ema else "0", "optim.ema_every": "2",
            "train.precision": "fp32", "train.channels_last": "false", "train.epochs": "2",
            "optim.norm_bias_lr_scale": "1", "optim.norm_scale_frozen": "false",
            "optim.muon_lr": "0"}  # fast's own values (64, true, 0.12): tests set these where they test them
    over.update({"optim.lr_max": "0.2", "optim.weight_decay": "5e-4"} if optimizer == "sgd" else
                {"optim.lr_max": "2e-3", "optim.weight_decay": "1e-4"})
    over.update(more)
    return build_config("fast4", None, "full", over)


def batches(n=STEPS, bs=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(bs, 3, 32, 32, generator=g, dtype=torch.float64), torch.randint(0, 10, (bs,), generator=g)) for _ in range(n)]


def tiny_net():
    """One conv filter (Muon's), a BatchNorm, a linear layer: the parts of a step, compiled in seconds on a CPU."""
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8),
                               torch.nn.ReLU(), torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(8, 10))


@pytest.mark.parametrize("optimizer, ema", [("adam", False), ("adam", True), ("sgd", False), ("sgd", True),
                                           ("sgd+muon", False), ("sgd+bias64", False), ("adam+bias64", True)])
def test_new_step_matches_the_previous_one(optimizer, ema):
    """In fp64: Adam turns the fp32 rounding noise of a conv bias's near-zero gradient (BatchNorm follows it)
    into a full step, so fp32 runs of two correct implementations part there; fp64 shows the algorithm.
    sgd+muon: the conv filters by Muon (its own one-cycle, its LR a device tensor in the new step; one Newton-Schulz
    iteration: the code of three, a third of the fp64 matmuls). +bias64: the norm biases in a group of their own (LR
    x 64, weight decay / 64). The EMA reads weights, whoever updates them. fast's label smoothing (0.2) is on: the
    plain step computes its loss, groups and optimizers itself, so a slip in the new step's helpers shows here."""
    more = {"optim.muon_lr": "0.05", "optim.muon_ns_steps": "1"} if "muon" in optimizer else {}
    if "bias64" in optimizer:
        more["optim.norm_bias_lr_scale"] = "64"
    cfg = small_cfg(optimizer.split("+")[0], ema, **more)
    assert cfg.optim.label_smoothing == 0.2
    torch.manual_seed(0)
    ref_model = build_model(cfg.model, torch.device("cpu"), False).double()
    new_model = build_model(cfg.model, torch.device("cpu"), False).double()
    new_model.load_state_dict(ref_model.state_dict())
    total = STEPS * 2
    ref = PlainStep(ref_model, cfg, torch.device("cpu"), total)
    new = TrainStep(new_model, cfg, torch.device("cpu"), STEPS, total, ema=
                    WeightEMA(new_model, 0.9, 2) if ema else None)
    ref_losses = []
    for x, y in batches():
        ref_losses.append(ref.step(x, y)[0])
        new.step(x, y)
    torch.testing.assert_close(new.losses, torch.stack(ref_losses))
    for (name, a), b in zip(ref_model.state_dict().items(), new_model.state_dict().values()):
        torch.testing.assert_close(b, a, msg=lambda m: f"{name}: {m}")
    if ema:
        ref_avg = ref.ema.module.state_dict()
        for name, b in new.ema.module.state_dict().items():
            if b.is_floating_point():  # AveragedModel averages num_batches_tracked too; it is unused (momentum set)
                torch.testing.assert_close(b, ref_avg[name], msg=lambda m: f"ema {name}: {m}")
        assert new.ema.updates == STEPS // 2


def test_device_lr_schedule_equals_one_cycle_step_by_step():
    cfg = build_config("fast4")
    total = 37
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    o = cfg.optim
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=o.lr_max, total_steps=total, pct_start=o.pct_start,
                                                anneal_strategy=o.anneal, div_factor=o.lr_div,
                                                final_div_factor=o.final_div, cycle_momentum=False)
    expected = []
    for _ in range(total):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    lrs = one_cycle_lrs(cfg, total)
    assert lrs.tolist() == expected and 0.9 * o.lr_max < lrs.max() <= o.lr_max  # the one-cycle peak, not a flat line


@pytest.mark.parametrize("total", [4, 8])  # pct_start 0.25 x 4 == 1: torch's OneCycleLR divides by zero there
def test_schedules_of_every_length_compute_where_the_rise_ends_on_step_zero(total):
    cfg = build_config("fast4")
    assert cfg.optim.pct_start * 4 == 1
    o = cfg.optim
    model = torch.nn.Linear(3, 2)
    step = TrainStep(model, cfg, torch.device("cpu"), total, total)  # the step train() builds
    plain = PlainStep(torch.nn.Linear(3, 2), cfg, torch.device("cpu"), total)  # the eager baseline's
    seen = []
    for _ in range(total):
        seen.append(plain.opt.param_groups[0]["lr"])
        plain.opt.step()
        plain.scheds[0].step()
    assert step.lr_values == pytest.approx(seen, rel=1e-6)
    assert step.lr_values[0] == pytest.approx(o.lr_max / o.lr_div)  # starts at the bottom
    assert all(a > b for a, b in zip(step.lr_values[1:], step.lr_values[2:]))  # then only descends
    assert max(step.lr_values) <= o.lr_max and step.lr_values[-1] < step.lr_values[0]


@contextlib.contextmanager
def count_host_reads():
    """Counts every Tensor method that copies a value to the host."""
    names = ["item", "__bool__", "tolist", "cpu", "numpy", "__int__", "__float__", "__index__"]
    calls = []
    saved = {n: getattr(torch.Tensor, n) for n in names}

    def wrap(name):
        def f(self, *a, **k):
            calls.append(name)
            return saved[name](self, *a, **k)
        return f
    for n in names:
        setattr(torch.Tensor, n, wrap(n))
    try:
        yield calls
    finally:
        for n, f in saved.items():
            setattr(torch.Tensor, n, f)


def test_an_epoch_of_steps_reads_nothing_back(monkeypatch):
    """The device loader's epoch and every step of it (LR, EMA, loss record) make no host read."""
    from bench.core.train import run_epoch, setup_run
    from pipeline.cifar10 import CIFAR10
    g = torch.Generator().manual_seed(0)
    data = CIFAR10(torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g),
                   torch.randint(0, 10, (64,), generator=g),
                   torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=g),
                   torch.randint(0, 10, (16,), generator=g))
    cfg = build_config("fast4", "fast", "full", {"batch_size": "16", "epochs": "2", "device": "cpu"})
    run = setup_run(cfg, data)
    with count_host_reads() as probe:  # the counter sees a read when there is one
        bool(run.step.losses.sum() == 0)
        run.step.correct.item()
    assert probe == ["__bool__", "item"]
    with count_host_reads() as calls:
        run_epoch(run, 1, steps_only=True)
    assert calls == [] and run.step.steps == 4


@pytest.mark.parametrize("optimizer, more", [("sgd", {"optim.norm_bias_lr_scale": "64"}), ("adam", {}),
                                             ("sgd", {"optim.muon_lr": "0.05"}),
                                             ("sgd", {"optim.muon_lr": "0.05", "train.precision": "bf16"})])
def test_compiled_step_is_two_whole_graphs_and_matches_the_eager_step(optimizer, more):
    """`train.compile` other than off compiles the forward+loss and the update (LR, optimizer, bookkeeping) as
    one graph each, with no graph break inside either and nothing compiled again over the steps (CPU here; the
    same code is what CUDA runs): same losses and weights as eager. The SGD case has a second, scaled LR group;
    the Muon cases trace Muon's update into the update graph beside SGD's: Newton-Schulz in fp32, as an fp32 run's,
    and in bf16 under a bf16 run (what a GPU run traces), whose compiled and eager roundings part (the losses by
    1e-2 after 4 steps)."""
    muon = "optim.muon_lr" in more
    from torch._dynamo.utils import counters

    data = batches(4)
    out = {}
    for mode in ("off", "default"):
        torch._dynamo.reset()
        counters.clear()
        cfg = small_cfg(optimizer, True, **{"train.compile": mode}, **more)
        model = tiny_net()
        step = TrainStep(model, cfg, torch.device("cpu"), 4, 8, WeightEMA(model, 0.9, 2))
        assert len(step.opt.param_groups) == (2 if more and not muon else 1) and (step.muon is None) != muon
        for x, y in data:
            step.step(x.float(), y)
        out[mode] = (step.losses.clone(), [p.detach().clone() for p in model.parameters()],
                     [p.detach().clone() for p in step.ema.module.parameters()], int(step.i))
        graphs, breaks = counters["stats"]["unique_graphs"], dict(counters["graph_break"])
    assert breaks == {} and graphs == 2, (graphs, breaks)  # the compiled run's: forward+loss, update; no break
    (l0, w0, e0, i0), (l1, w1, e1, i1) = out["off"], out["default"]
    assert i0 == i1 == 4
    # fp32: the summation order of a single-threaded run (OMP_NUM_THREADS=1) moved a weight by 2e-6 after 4 steps
    tol = {"rtol": 1e-5, "atol": 1e-5} if "train.precision" not in more else {"rtol": 1e-2, "atol": 1e-2}
    torch.testing.assert_close(l1, l0, **tol)
    for a, b in zip(w0 + e0, w1 + e1):
        torch.testing.assert_close(b, a, **tol)


def test_a_graph_step_counts_one_step_per_call_in_buffers_sized_for_the_run():
    """compile=graph's first call captures: the capture's warm-up calls (and, on the CPU stand-in, the captured
    call) must not advance the step counters or the loss record, or buffers sized for the run's steps overflow
    (index out of bounds here, a device-side assert on CUDA: step-bench and profile size them for warm-up + steps)."""
    from bench.core.step import StepGraph, run_directly

    torch._dynamo.reset()
    cfg = small_cfg("sgd", False, **{"train.compile": "graph", "train.warmup_steps": "1"})
    step = TrainStep(tiny_net(), cfg, torch.device("cpu"), 2, 2, capture=run_directly)
    assert isinstance(step._run, StepGraph) and step._run.warmup == 3  # 3 warm-up calls + the captured one
    for x, y in batches(2):
        step.step(x.float(), y)
    assert int(step.i) == int(step.j) == 2 and torch.count_nonzero(step.losses) == 2
    assert 0 < int(step.correct) <= 8  # two batches of 4, counted once each


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: the sync debug mode is CUDA's")
@pytest.mark.parametrize("mode", ["off", "default"])
def test_a_cuda_epoch_never_synchronises(mode):
    """On CUDA an epoch of steps (device loader, LR, EMA, loss record; compiled or not) under
    set_sync_debug_mode('error'): any synchronising call raises."""
    from bench.core.train import run_epoch, setup_run
    from pipeline.cifar10 import CIFAR10
    g = torch.Generator().manual_seed(0)
    data = CIFAR10(torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8, generator=g),
                   torch.randint(0, 10, (256,), generator=g),
                   torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g),
                   torch.randint(0, 10, (64,), generator=g))
    cfg = build_config("fast4", "fast", "full", {"batch_size": "64", "epochs": "2", "device": "cuda",
                                                "train.compile": mode, "train.warmup_steps": "2"}, "cuda")
    run = setup_run(cfg, data)
    run_epoch(run, 2, steps_only=True)  # epoch 1 whitens (an eigh: a sync, before the steps)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        run_epoch(run, 2, steps_only=True)
    finally:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.parametrize("more", [{}, {"optim.muon_lr": "0.05"}])
def test_a_captured_whole_step_replays_like_the_plain_step(more):
    """compile=graph's capture logic on the CPU: StepGraph with the stand-in capture (the warm-up calls, then the
    function itself as the replay) gives the plain compiled step's losses and weights, batch by batch, once the
    warm-up is undone as the harness undoes it (Muon's momentum too: fast's filters are Muon's). On CUDA the same
    object replays a torch.cuda.graph."""
    from bench.core.step import StepGraph, run_directly

    data = [(x.float(), y) for x, y in batches(4)]
    out = {}
    for mode in ("default", "graph"):
        torch._dynamo.reset()
        cfg = small_cfg("sgd", False, **{"train.compile": mode, "train.warmup_steps": "1"}, **more)
        model = tiny_net()
        step = TrainStep(model, cfg, torch.device("cpu"), 4, 8, capture=run_directly)
        assert isinstance(step._run, StepGraph) == (mode == "graph") and (step.muon is None) == (not more)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        step.step(*data[0])  # the harness's warm-up: capture (4 steps here), then everything restored
        model.load_state_dict(state)
        step.reset()
        for x, y in data:
            step.step(x, y)
        out[mode] = (step.losses.clone(), [p.detach().clone() for p in model.parameters()], int(step.i))
        if mode == "graph":
            assert step._run.x.data_ptr() != data[-1][0].data_ptr()  # the batch went through the static buffer
            torch.testing.assert_close(step._run.x, data[-1][0])
    (l0, w0, i0), (l1, w1, i1) = out["default"], out["graph"]
    assert i0 == i1 == 4 and torch.count_nonzero(l0) == 4
    torch.testing.assert_close(l1, l0)
    for a, b in zip(w0, w1):
        torch.testing.assert_close(b, a)
    with pytest.raises(ValueError, match="drop_last"):
        step.step(data[0][0][:2], data[0][1][:2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: CUDA graph capture")
@pytest.mark.parametrize("more", [{}, {"optim.muon_lr": "0.05"}])
def test_a_cuda_captured_whole_step_replays_like_the_plain_step(more):
    """The CPU test above on CUDA: a real torch.cuda.graph capture and replay (cuda_capture) gives the compiled
    (default mode) step's losses, weights and counters, batch by batch, once the warm-up is undone as the harness
    undoes it. Not yet run on a GPU."""
    from bench.core.step import StepGraph, cuda_capture

    dev = torch.device("cuda")
    data = [(x.float().to(dev), y.to(dev)) for x, y in batches(4)]
    out = {}
    for mode in ("default", "graph"):
        torch._dynamo.reset()
        cfg = small_cfg("sgd", False, **{"train.compile": mode, "train.warmup_steps": "1", "train.device": "cuda"},
                        **more)
        model = tiny_net().to(dev)
        step = TrainStep(model, cfg, dev, 4, 8, capture=cuda_capture)
        assert isinstance(step._run, StepGraph) == (mode == "graph")
        state = {k: v.clone() for k, v in model.state_dict().items()}
        step.step(*data[0])  # the harness's warm-up: capture, then everything restored
        model.load_state_dict(state)
        step.reset()
        for x, y in data:
            step.step(x, y)
        torch.cuda.synchronize()
        out[mode] = (step.losses.clone(), [p.detach().clone() for p in model.parameters()], int(step.i),
                     int(step.correct))
    (l0, w0, i0, c0), (l1, w1, i1, c1) = out["default"], out["graph"]
    assert i0 == i1 == 4 and c0 == c1 and torch.count_nonzero(l0) == 4
    torch.testing.assert_close(l1, l0, rtol=1e-4, atol=1e-5)
    for a, b in zip(w0, w1):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
