"""Muon on the conv filters (bench/core/muon.py): against torch.optim.Muon step by step, and through the loop training
uses (which parameters it takes, and the filters it leaves at norm sqrt(out))."""
import pytest
import torch

from bench.core.muon import FilterMuon, newton_schulz
from bench.core.step import TrainStep, trainable
from bench.core.variants import build_config
from bench.run import train
from model.build import build_model


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon, the reference, came in torch 2.9")
@pytest.mark.parametrize("shape", [(8, 3, 3, 3), (16, 8, 3, 3), (5, 7, 1, 1)])
def test_filter_muon_steps_as_torch_muon_on_the_filter_viewed_2d(shape):
    """torch's Muon on the (out, in*kh*kw) view, given the filter rescaled to norm sqrt(out) before each step (what
    FilterMuon adds), lands where FilterMuon does, over 4 steps with momentum; FilterMuon's LR is a 0-dim tensor and its
    Newton-Schulz bf16, as torch's always is. Shapes with out <= in*kh*kw, where torch's default LR adjustment is 1
    (FilterMuon never adjusts)."""
    lr, momentum, ns_steps = 0.05, 0.6, 3
    g = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(shape, generator=g))
    v = torch.nn.Parameter(w.detach().reshape(shape[0], -1).clone())
    ours = FilterMuon([w], torch.tensor(lr), momentum, ns_steps, torch.bfloat16)
    ref = torch.optim.Muon([v], lr=lr, weight_decay=0.0, momentum=momentum, nesterov=True, ns_steps=ns_steps)
    for _ in range(4):
        grad = torch.randn(shape, generator=g)
        w.grad, v.grad = grad.clone(), grad.reshape(shape[0], -1).clone()
        with torch.no_grad():
            v.mul_(shape[0] ** 0.5 / v.norm())
        before = w.detach().clone()
        ours.step()
        ref.step()
        assert not torch.allclose(w, before)  # it moved
        torch.testing.assert_close(w.detach().reshape(shape[0], -1), v.detach())


@pytest.mark.parametrize("shape", [(64, 288), (40, 24)])
def test_newton_schulz_orthogonalises_in_the_dtype_it_is_given(shape):
    """Five steps bring every singular value of a random matrix (wide, or tall: iterated on its transpose) into
    Jordan's band around 1, and the fp32 iteration is the fp64 one to fp32 rounding; bf16 (torch's only choice) is
    about 1e-2 off."""
    g = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = newton_schulz(g, 5)
    s = torch.linalg.svdvals(exact)
    assert exact.dtype == torch.float64 and exact.shape == shape
    assert s.min() > 0.6 and s.max() < 1.2 and s.max() - s.min() > 0.05  # near 1, not at it: the quintic's trade
    fp32, bf16 = newton_schulz(g, 5, torch.float32), newton_schulz(g, 5, torch.bfloat16)
    assert fp32.dtype == torch.float32 and bf16.dtype == torch.bfloat16
    torch.testing.assert_close(fp32.double(), exact, rtol=0, atol=1e-5)
    assert (bf16.double() - exact).abs().max() > 1e-3


def test_filter_muon_refuses_what_is_not_a_filter():
    with pytest.raises(ValueError, match="conv filters"):
        FilterMuon([torch.nn.Parameter(torch.randn(4, 5))], 0.1, 0.6, 3)


def muon_cfg(**more):
    over = {"optim.muon_lr": "0.1", "train.precision": "fp32", "train.channels_last": "false", "train.epochs": "1"}
    over.update(more)
    return build_config("fast4", None, "full", over)


def test_muon_takes_the_trainable_filters_and_sgd_the_rest():
    cfg = muon_cfg()
    model = build_model(cfg.model, torch.device("cpu"), False)
    model.prep[0].weight.requires_grad_(False)  # as a frozen whitened first conv is
    step = TrainStep(model, cfg, torch.device("cpu"), 1, 1)
    filters = {id(p) for p in step.muon.param_groups[0]["params"]}
    rest = {id(p) for g in step.opt.param_groups for p in g["params"]}
    want = {id(p) for p in trainable(model) if p.ndim == 4}
    assert filters == want and len(want) == 7 and not filters & rest
    assert filters | rest == {id(p) for p in trainable(model)}
    assert step.muon.param_groups[0]["lr_scale"] == pytest.approx(0.1 / cfg.optim.lr_max)
    assert step.muon.param_groups[0]["ns_dtype"] is None  # fp32 training: the filters' own dtype
    bf16 = TrainStep(model, muon_cfg(**{"train.precision": "bf16"}), torch.device("cpu"), 1, 1).muon
    assert bf16.param_groups[0]["ns_dtype"] == torch.bfloat16
    assert TrainStep(model, muon_cfg(**{"optim.muon_lr": "0"}), torch.device("cpu"), 1, 1).muon is None


def test_the_loop_trains_the_filters_by_muon_at_norm_sqrt_out(tmp_path, cifar):
    """Through train() with fast's own Muon (no override): every trainable filter ends at Frobenius norm sqrt(out)
    (rescaled before each Muon step; the last steps are small), where torch's default init leaves about sqrt(out / 3);
    the whitened conv stays frozen. `--muon_lr=0` is another recipe, named as such: the one fast was before Muon."""
    cfg = build_config("fast4", "fast", "full", {
        "train_subset": "256", "test_subset": "200", "batch_size": "64", "epochs": "1", "results_dir": str(tmp_path),
        "tta": "none"}, "cpu")
    assert "muon_lr" not in cfg.preset and cfg.optim.muon_lr > 0
    assert build_config("fast4", None, "full", {"muon_lr": "0"}).preset == "fast4(muon_lr=0)"
    r = train(cfg, cifar, quiet=True, write=False)
    convs = [m for m in r.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 8 and not convs[0].weight.requires_grad  # fast whitens and freezes the first
    for conv in convs[1:]:
        w = conv.weight.detach()
        assert w.norm().item() == pytest.approx(len(w) ** 0.5, rel=1e-2)
