"""The three loaders behind one interface: alignment, coverage, reproducibility, agreement."""
import numpy as np
import pytest
import torch

from pipeline import MEAN, STD, LoaderSpec, make_loader
from pipeline.dali import dali_available

DALI_OK, DALI_WHY = dali_available()
PIPELINES = ["device", "dataloader",
             pytest.param("dali", marks=pytest.mark.skipif(not DALI_OK, reason=DALI_WHY))]


def id_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is the constant (i % 250) + 1 in every pixel; its label is (i % 250) % 10."""
    ids = torch.arange(n) % 250
    images = (ids + 1).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, 32, 32).contiguous()
    return images, ids % 10


def recover_ids(x: torch.Tensor) -> torch.Tensor:
    """Undo normalisation on channel 0 and take each image's most common value (padding and cutout are minorities)."""
    px = torch.round((x[:, 0].float() * STD[0] + MEAN[0]) * 255).long().flatten(1)
    return px.mode(1).values - 1


def spec(**kw):
    base = dict(batch_size=64, seed=5, drop_last=False, dtype=torch.bfloat16, channels_last=True)
    base.update(kw)
    return LoaderSpec(**base)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_labels_stay_with_their_images_and_an_epoch_covers_all(pipeline):
    images, labels = id_images(1000)
    src = images.clone()
    loader = make_loader(pipeline, images, labels, spec(), workers=0)
    assert len(loader) == 16  # 15 full batches + 1 of 40
    seen = []
    for x, y in loader.epoch(0):
        assert x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last)
        assert y.dtype == torch.int64
        ids = recover_ids(x)
        assert torch.equal(ids % 10, y)
        seen.append(ids)
    seen = torch.cat(seen)
    assert torch.equal(torch.bincount(seen, minlength=250), torch.full((250,), 4))
    assert torch.equal(images, src)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_same_seed_same_batches_other_epoch_other_batches(pipeline):
    images = torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (300,))
    a = [x for x, _ in make_loader(pipeline, images, labels, spec(), workers=0).epoch(3)]
    b = [x for x, _ in make_loader(pipeline, images, labels, spec(), workers=0).epoch(3)]
    c = [x for x, _ in make_loader(pipeline, images, labels, spec(), workers=0).epoch(4)]
    assert all(torch.equal(u, v) for u, v in zip(a, b)) and len(a) == len(b) == 5
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_drop_last(pipeline):
    images, labels = id_images(1000)
    loader = make_loader(pipeline, images, labels, spec(drop_last=True), workers=0)
    sizes = [len(y) for _, y in loader.epoch(0)]
    assert sizes == [64] * 15 and len(loader) == 15


def test_dataloader_with_workers_matches_in_process():
    images = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (256,))
    a = list(make_loader("dataloader", images, labels, spec(), workers=0).epoch(1))
    b = list(make_loader("dataloader", images, labels, spec(), workers=2).epoch(1))
    assert all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b))


def reference_augment(images: torch.Tensor, s: LoaderSpec, seed: int = 0) -> torch.Tensor:
    """A per-image numpy reference of the default recipe (pad-and-crop, random flip, clipped cutout, normalise),
    sharing no code with any loader: uint8 (N, 3, 32, 32) -> float32 (N, 3, 32, 32)."""
    rng = np.random.default_rng(seed)
    mean, std = np.array(MEAN, np.float32)[:, None, None], np.array(STD, np.float32)[:, None, None]
    p, k, out = s.crop_padding, s.cutout_size, np.empty(images.shape, np.float32)
    for i, img in enumerate(images.numpy()):
        padded = np.zeros((3, 32 + 2 * p, 32 + 2 * p), np.uint8)
        padded[:, p:p + 32, p:p + 32] = img
        dy, dx = rng.integers(0, 2 * p + 1, 2)
        crop = padded[:, dy:dy + 32, dx:dx + 32][:, :, ::-1 if rng.random() < 0.5 else 1]
        crop = (crop.astype(np.float32) / 255 - mean) / std
        cy, cx = rng.integers(0, 32, 2) - k // 2
        crop[:, max(cy, 0):max(cy + k, 0), max(cx, 0):max(cx + k, 0)] = 0.0
        out[i] = crop
    return torch.from_numpy(out)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_pipelines_agree_on_real_data_statistics(pipeline, cifar):
    """Same dtype, shape, layout; per-channel mean and std of augmented batches close to those of an independent
    per-image reference of the same recipe (the device loader used to be its own reference)."""
    images, labels = cifar.train_images[:2048], cifar.train_labels[:2048]
    s = spec(batch_size=256)
    batches = [x for x, _ in make_loader(pipeline, images, labels, s, 0).epoch(0)]
    assert all(x.dtype == s.dtype and x.is_contiguous(memory_format=torch.channels_last) for x in batches)
    xs = torch.cat([x.float() for x in batches])
    assert xs.shape == (2048, 3, 32, 32)
    ref = reference_augment(images, s)
    torch.testing.assert_close(xs.mean((0, 2, 3)), ref.mean((0, 2, 3)), atol=0.03, rtol=0)
    torch.testing.assert_close(xs.std((0, 2, 3)), ref.std((0, 2, 3)), atol=0.03, rtol=0)
    holes = [(v == 0).all(1).double().mean().item() for v in (xs, ref)]  # cutout: zero (the mean) in every channel
    assert abs(holes[0] - holes[1]) < 0.01, holes
    # normalisation: without augmentation the data set's own statistics are about (0, 1)
    plain = make_loader(pipeline, images, labels, spec(batch_size=256, crop_padding=0, flip=False, cutout_size=0), 0)
    xs = torch.cat([x.float() for x, _ in plain.epoch(0)])
    assert xs.mean((0, 2, 3)).abs().max() < 0.05 and (xs.std((0, 2, 3)) - 1).abs().max() < 0.05


def flips_by_image(pipeline: str, alternate: bool, epochs: int = 3, n: int = 96) -> torch.Tensor:
    """(epochs, n) bool: whether image i came out mirrored in each epoch (labels carry the image index)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)  # asymmetric almost surely
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    plain = (images.float() / 255 - mean) / std
    s = spec(crop_padding=0, cutout_size=0, flip_alternate=alternate, dtype=torch.float32, channels_last=False)
    loader = make_loader(pipeline, images, torch.arange(n), s, workers=0)
    out = torch.zeros(epochs, n, dtype=torch.bool)
    for e in range(epochs):
        for x, idx in loader.epoch(e):
            same = torch.isclose(x, plain[idx], atol=1e-5).flatten(1).all(1)
            mirrored = torch.isclose(x, plain[idx].flip(3), atol=1e-5).flatten(1).all(1)
            assert bool((same ^ mirrored).all())  # each image is either itself or its mirror
            out[e, idx] = mirrored
    return out


@pytest.mark.parametrize("pipeline", ["device", "dataloader"])
def test_alternating_flip_mirrors_each_image_every_other_epoch(pipeline):
    f = flips_by_image(pipeline, alternate=True)
    assert 0.25 < f[0].float().mean() < 0.75  # epoch 0: each image's own coin
    assert bool((f[1] == ~f[0]).all()) and bool((f[2] == f[0]).all())
    r = flips_by_image(pipeline, alternate=False)
    assert 0.25 < (r[1] != r[0]).float().mean() < 0.75  # random flips: about half change, not all


def test_alternating_flip_is_refused_for_dali():
    from bench.core.config import ConfigError
    from bench.core.variants import build_config
    with pytest.raises(ConfigError, match="flip_alternate"):
        build_config("fast4", None, "full", {"data.pipeline": "dali"})


def crops_and_flips(x: torch.Tensor, src: torch.Tensor, p: int) -> torch.Tensor:
    """(N,) bool mirrored: each output image (normalised) must be exactly one (2p+1)^2 crop of its source padded by
    p zeros, or of its mirror padded so; which one is returned. Windows by unfold, mirrors by flip: no loader code."""
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    out = torch.round((x.float() * std + mean) * 255).to(torch.uint8)  # back to the source's integers

    def matches(images):  # (N, 2p+1, 2p+1): which window of the padded image equals the output
        win = torch.nn.functional.pad(images, (p,) * 4).unfold(2, 32, 1).unfold(3, 32, 1)  # (N, 3, 2p+1, 2p+1, 32, 32)
        return (win == out[:, :, None, None]).all(5).all(4).all(1)
    plain, mirrored = matches(src).flatten(1).any(1), matches(src.flip(3)).flatten(1).any(1)
    assert bool((plain ^ mirrored).all()), "an image that is neither a crop of its source nor of its mirror"
    return mirrored


@pytest.mark.parametrize("pipeline", ["device", "dataloader"])
def test_the_recipes_crop_and_flip_mirror_each_image_as_asked(pipeline):
    """Every recipe crops (padding 4) and flips: the device loader fuses the flip into the crop's gather, so the
    alternating-flip test at padding 0 never sees it. Random flips: about half; alternating: the opposite each epoch."""
    n, p = 128, 4
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    for alternate in (False, True):
        s = spec(crop_padding=p, cutout_size=0, flip_alternate=alternate, dtype=torch.float32, channels_last=False)
        loader = make_loader(pipeline, images, torch.arange(n), s, workers=0)
        flips = torch.zeros(2, n, dtype=torch.bool)
        for e in range(2):
            for x, idx in loader.epoch(e):
                flips[e, idx] = crops_and_flips(x, images[idx], p)
        assert 0.3 < flips[0].float().mean() < 0.7 and 0.3 < flips[1].float().mean() < 0.7
        if alternate:
            assert bool((flips[1] == ~flips[0]).all())
        else:
            assert 0.3 < (flips[1] != flips[0]).float().mean() < 0.7
