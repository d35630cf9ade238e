import pytest
import torch

from model import CustomResNet, norm_act_factory

# The reference summary: output shape after each stage for a 32x32 input.
REFERENCE_SHAPES = {"prep": (64, 32, 32), "layer1": (128, 16, 16), "layer2": (256, 8, 8), "layer3": (512, 4, 4),
                    "pool": (512, 1, 1), "fc": (10,)}


def test_parameter_count_matches_reference():
    model = CustomResNet()
    assert sum(p.numel() for p in model.parameters()) == 6_575_370
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 8 and all(c.bias is not None for c in convs)


def test_every_stage_has_the_reference_shape():
    model = CustomResNet().eval()
    seen = {}
    for name in REFERENCE_SHAPES:
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, tuple(o.shape[1:])))
    out = model(torch.randn(2, 3, 32, 32))
    assert seen == REFERENCE_SHAPES
    assert out.shape == (2, 10)
    probs = model.predict_proba(torch.randn(3, 3, 32, 32))
    torch.testing.assert_close(probs.sum(1), torch.ones(3))


@pytest.mark.parametrize("norm, layer", [("bn", torch.nn.BatchNorm2d), ("gn", torch.nn.GroupNorm),
                                         ("ln", torch.nn.GroupNorm)])
def test_norm_options(norm, layer):
    model = CustomResNet(norm_act_factory(norm))
    norms = [m for m in model.modules() if isinstance(m, layer)]
    assert len(norms) == 8
    if norm == "ln":
        assert all(m.num_groups == 1 for m in norms)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_dropout_is_active_in_training_only():
    model = CustomResNet(norm_act_factory("bn", dropout=0.5))
    assert sum(isinstance(m, torch.nn.Dropout) for m in model.modules()) == 8
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), model(x))


def test_channels_last_bf16_matches_fp32():
    model = CustomResNet().eval()
    x = torch.randn(4, 3, 32, 32)
    ref = model(x)
    cl = model.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cl(x.to(memory_format=torch.channels_last)).float()
    assert (out - ref).abs().max() < 0.05 * ref.abs().max() + 0.05


def test_dropout_drops_its_share_in_training_mode():
    """model.dropout=0.3 as the training loop builds it: in train mode every Dropout zeroes about 30% of its
    (non-zero) inputs and scales the rest by 1 / 0.7; two forward passes differ. Eval mode is exact (above)."""
    from bench.core.variants import build_config
    from model.build import build_model
    cfg = build_config("seed", "eager", "full", {"model.dropout": "0.3"}, "cpu")
    model = build_model(cfg.model, torch.device("cpu"), channels_last=False).train()
    seen = []
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.register_forward_hook(lambda mod, inp, out: seen.append((inp[0].detach().clone(), out.detach())))
    x = torch.randn(4, 3, 32, 32)
    a, b = model(x), model(x)
    assert len(seen) == 16 and not torch.allclose(a, b)
    for inp, out in seen[:8]:
        live = inp != 0
        dropped = (out == 0) & live
        assert 0.25 < dropped.sum() / live.sum() < 0.35
        torch.testing.assert_close(out[live & ~dropped], inp[live & ~dropped] / 0.7)
