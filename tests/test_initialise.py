"""Recipe initialisations: a whitened first conv decorrelates patches; dirac convs pass their input through;
frozen parameters do not move."""
import torch
import torch.nn.functional as F

from bench.core.step import trainable
from bench.core.train import init_model
from bench.core.variants import build_config
from model.initialise import dirac_conv_, patch_covariance, whiten_conv_
from model.resnet import CustomResNet


def correlated_images(n=200, seed=0):
    """Smooth, channel-correlated images: neighbouring pixels and channels share most of their value."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, 16, 16, generator=g)
    x = F.interpolate(base, size=32, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    return x + 0.3 * torch.randn(n, 3, 32, 32, generator=g) + torch.tensor([0.5, -0.2, 0.1]).view(1, 3, 1, 1)


def test_patch_covariance_matches_a_direct_computation():
    x = correlated_images(20)
    p = F.unfold(x.double(), 3).transpose(1, 2).reshape(-1, 27)
    torch.testing.assert_close(patch_covariance(x, 3, chunk=7), torch.cov(p.T, correction=0))


def test_whitened_conv_decorrelates_patches():
    x = correlated_images()
    conv = torch.nn.Conv2d(3, 64, 3, padding=1)
    before = torch.cov(F.conv2d(x, conv.weight[:27], padding=0).permute(1, 0, 2, 3).reshape(27, -1))
    assert (before - torch.diag(torch.diag(before))).abs().max() > 0.05  # the input is far from white
    untouched = conv.weight[54:].clone()
    whiten_conv_(conv, x, eps=1e-6)
    y = F.conv2d(x.double(), conv.weight[:27].double())  # valid positions, as the covariance
    cov = torch.cov(y.permute(1, 0, 2, 3).reshape(27, -1))
    torch.testing.assert_close(cov, torch.eye(27, dtype=torch.float64), atol=2e-3, rtol=0)
    torch.testing.assert_close(conv.weight[27:54], -conv.weight[:27])  # both signs, so a ReLU keeps each direction
    assert torch.equal(conv.weight[54:], untouched) and torch.all(conv.bias[:54] == 0)


def test_dirac_conv_is_the_identity_on_its_first_channels():
    conv = torch.nn.Conv2d(8, 12, 3, padding=1, bias=False)
    dirac_conv_(conv)
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(conv(x)[:, :8], x)
    assert conv(x)[:, 8:].abs().sum() > 0  # the extra outputs keep their random filters


def test_fast_recipe_freezes_the_whitened_conv_and_the_optimiser_skips_it():
    cfg = build_config("fast4", "fast", "full", {"init.dirac": "true"})
    model = CustomResNet()
    init_model(model, cfg)
    assert not model.prep[0].weight.requires_grad and model.prep[0].bias.requires_grad
    ids = {id(p) for p in trainable(model)}
    # everything else trains, the BatchNorm scales included (an earlier fast froze them)
    assert id(model.prep[0].weight) not in ids and len(ids) == sum(1 for _ in model.parameters()) - 1
    x = torch.randn(2, 128, 6, 6)
    torch.testing.assert_close(model.layer1[1].body[0][0].weight.new_tensor(0) + F.conv2d(
        x, model.layer1[1].body[0][0].weight, padding=1), x)  # dirac applied beyond the prep conv


def test_frozen_whitened_conv_does_not_move_while_the_rest_trains():
    from bench.core.ema import WeightEMA
    from bench.core.step import TrainStep
    cfg = build_config("fast4", None, "full", {"train.precision": "fp32", "train.channels_last": "false"})
    model = CustomResNet(logit_scale=0.125)
    init_model(model, cfg)
    whiten_conv_(model.prep[0], correlated_images(20))
    frozen, other = model.prep[0].weight.clone(), model.layer1[0][0].weight.clone()
    step = TrainStep(model, cfg, torch.device("cpu"), 3, 6, WeightEMA(model, 0.99, 5))
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        step.step(torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g))
    assert torch.equal(model.prep[0].weight, frozen) and not torch.equal(model.layer1[0][0].weight, other)


def test_whitening_eps_shrinks_the_weak_directions():
    """With eps = 1 (of the order of the eigenvalues), direction i comes out with variance l_i / (l_i + 1), not 1."""
    x = correlated_images()
    conv = torch.nn.Conv2d(3, 64, 3, padding=1)
    eigvals = whiten_conv_(conv, x, eps=1.0)
    p = F.unfold(x.double(), 3).transpose(1, 2).reshape(-1, 27)
    lam = torch.linalg.eigvalsh(torch.cov(p.T, correction=0))
    torch.testing.assert_close(eigvals, lam)
    assert float(lam.min()) < 0.2 < 2 < float(lam.max())  # both ends: eps matters at one, hardly at the other
    y = F.conv2d(x.double(), conv.weight[:27].double())
    cov = torch.cov(y.permute(1, 0, 2, 3).reshape(27, -1), correction=0)
    torch.testing.assert_close(cov, torch.diag(lam / (lam + 1.0)), atol=2e-5, rtol=1e-4)
