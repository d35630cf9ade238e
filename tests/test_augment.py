"""The batch verbs, statistically: tolerances a broken implementation cannot meet."""
import math

import pytest
import torch

from pipeline import batch_crop, batch_cutout, batch_flip_lr
from tests.conftest import DEVICES


def chi2_uniform_ok(counts: torch.Tensor) -> bool:
    """Chi-square goodness of fit to uniform at about p = 0.001 (Wilson-Hilferty approximation)."""
    counts = counts.double()
    k = counts.numel()
    expected = counts.sum() / k
    stat = ((counts - expected) ** 2 / expected).sum().item()
    dof = k - 1
    crit = dof * (1 - 2 / (9 * dof) + 3.09 * math.sqrt(2 / (9 * dof))) ** 3
    return stat < crit


def coord_images(n: int, device: str, h: int = 32, w: int = 32) -> torch.Tensor:
    """Pixel value encodes its position: channel 0 = row + 1, channel 1 = col + 1, channel 2 = image index % 251 + 1."""
    rows = torch.arange(1, h + 1, device=device).view(1, h, 1).expand(n, h, w)
    cols = torch.arange(1, w + 1, device=device).view(1, 1, w).expand(n, h, w)
    ids = (torch.arange(n, device=device) % 251 + 1).view(n, 1, 1).expand(n, h, w)
    return torch.stack([rows, cols, ids], 1).to(torch.uint8)  # (N, 3, H, W), no zeros


@pytest.mark.parametrize("device", DEVICES)
def test_crop_offsets_all_occur_uniformly_and_padding_is_fill(device):
    n, p = 40_500, 4
    x = coord_images(n, device)
    src = x.clone()
    out = batch_crop(x, p, torch.Generator(device).manual_seed(0))
    assert torch.equal(x, src) and out.shape == x.shape and out.dtype == x.dtype
    # The crop's top-left source pixel sits at (dy - p, dx - p): recover the offset from any valid pixel.
    valid = out[:, 0] > 0  # (N, H, W)
    assert torch.equal(valid, out[:, 1] > 0) and torch.equal(valid, out[:, 2] > 0)
    r = torch.arange(32, device=device).view(1, 32, 1)
    dy = (out[:, 0].long() - 1 - r).masked_fill(~valid, 99).amin((1, 2)) + p
    cc = torch.arange(32, device=device).view(1, 1, 32)
    dx = (out[:, 1].long() - 1 - cc).masked_fill(~valid, 99).amin((1, 2)) + p
    assert int(dy.min()) == 0 and int(dy.max()) == 2 * p and int(dx.max()) == 2 * p
    counts = torch.bincount((dy * (2 * p + 1) + dx).cpu(), minlength=81)
    assert (counts > 0).all() and chi2_uniform_ok(counts)
    # every pixel is either exactly the fill (0) or the source pixel at its offset
    expect_row = r + dy.view(-1, 1, 1) - p + 1
    assert torch.equal(out[:, 0].long()[valid], expect_row.expand_as(valid)[valid])
    inside = (expect_row >= 1) & (expect_row <= 32)
    assert torch.equal(valid, inside.expand_as(valid) & ((cc + dx.view(-1, 1, 1) - p + 1 >= 1) &
                                                         (cc + dx.view(-1, 1, 1) - p + 1 <= 32)))
    assert torch.equal(out[:, 2][valid], x[:, 2][valid])  # image identity kept


@pytest.mark.parametrize("device", DEVICES)
def test_flip_rate_is_half_and_flips_are_exact(device):
    n = 20_000
    x = coord_images(n, device)
    out = batch_flip_lr(x, torch.Generator(device).manual_seed(1))
    flipped = out[:, 1, 0, 0] == 32
    assert torch.equal(out[flipped], x[flipped].flip(3)) and torch.equal(out[~flipped], x[~flipped])
    rate = flipped.double().mean().item()
    assert abs(rate - 0.5) < 4 * math.sqrt(0.25 / n)


@pytest.mark.parametrize("device", DEVICES)
def test_cutout_inside_has_exact_size_and_uniform_position(device):
    n, k = 29_400, 8  # 25 x 25 positions
    x = coord_images(n, device).float()
    out = batch_cutout(x, k, torch.Generator(device).manual_seed(2), clip=False)
    hole = (out == 0).all(1)  # (N, H, W)
    assert torch.equal(hole.sum((1, 2)), torch.full((n,), k * k, device=device))
    assert torch.equal(out[~hole[:, None].expand_as(out)], x[~hole[:, None].expand_as(x)])
    ys = hole.any(2).float().argmax(1)
    xs = hole.any(1).float().argmax(1)
    assert int(ys.max()) == 32 - k and int(xs.max()) == 32 - k
    assert chi2_uniform_ok(torch.bincount((ys * 25 + xs).cpu(), minlength=625))


@pytest.mark.parametrize("device", DEVICES)
def test_cutout_clipped_centre_is_uniform_over_the_image(device):
    n, k = 40_960, 8
    x = coord_images(n, device)
    out = batch_cutout(x, k, torch.Generator(device).manual_seed(3), fill=0)
    hole = (out == 0).all(1)
    # the square [c - 4, c + 4) clipped: first and last covered row give the centre
    rows = hole.any(2)
    first = rows.float().argmax(1)
    last = 31 - rows.flip(1).float().argmax(1)
    centre = torch.where(first == 0, last + 1 - k // 2, first + k // 2)
    assert int(centre.min()) == 0 and int(centre.max()) == 31
    assert chi2_uniform_ok(torch.bincount(centre.cpu(), minlength=32))
    area = hole.sum((1, 2))
    assert int(area.max()) == k * k and int(area.min()) == (k // 2) ** 2  # a corner clips to a quarter


def test_cutout_probability_and_seeding():
    x = coord_images(8_000, "cpu")
    out = batch_cutout(x, 8, torch.Generator().manual_seed(4), prob=0.3)
    rate = (out == 0).any(1).any(2).any(1).double().mean().item()
    assert abs(rate - 0.3) < 4 * math.sqrt(0.21 / 8000)
    a = batch_crop(x, 4, torch.Generator().manual_seed(9))
    b = batch_crop(x, 4, torch.Generator().manual_seed(9))
    c = batch_crop(x, 4, torch.Generator().manual_seed(10))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("fmt", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.bfloat16])
def test_verbs_keep_dtype_and_layout_of_any_input(dtype, fmt):
    x = coord_images(16, "cpu").to(dtype).contiguous(memory_format=fmt)
    outs = {"crop": batch_crop(x, 2), "crop0": batch_crop(x, 0), "flip": batch_flip_lr(x), "cutout": batch_cutout(x, 4),
            "cutout0": batch_cutout(x, 0)}
    for name, out in outs.items():
        assert out.dtype == dtype and out.shape == x.shape, name
        assert out.is_contiguous(memory_format=fmt), f"{name}: strides {out.stride()} for input strides {x.stride()}"
