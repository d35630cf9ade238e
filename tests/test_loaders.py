"""The three loaders behind one interface: alignment, coverage, reproducibility, agreement."""
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


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_pipelines_agree_on_real_data_statistics(pipeline, cifar):
    """Same dtype, shape, layout; per-channel mean and std of augmented batches close to the device loader's."""
    images, labels = cifar.train_images[:2048], cifar.train_labels[:2048]
    stats = {}
    for name in ("device", pipeline):
        xs = torch.cat([x.float() for x, _ in make_loader(name, images, labels, spec(batch_size=256), 0).epoch(0)])
        assert xs.shape == (2048, 3, 32, 32)
        stats[name] = (xs.mean((0, 2, 3)), xs.std((0, 2, 3)))
    torch.testing.assert_close(stats[pipeline][0], stats["device"][0], atol=0.03, rtol=0)
    torch.testing.assert_close(stats[pipeline][1], stats["device"][1], atol=0.03, rtol=0)
    # normalisation: without augmentation the data set's own statistics are about (0, 1)
    plain = make_loader(pipeline, images, labels, spec(batch_size=256, crop_padding=0, flip=False, cutout_size=0), 0)
    xs = torch.cat([x.float() for x, _ in plain.epoch(0)])
    assert xs.mean((0, 2, 3)).abs().max() < 0.05 and (xs.std((0, 2, 3)) - 1).abs().max() < 0.05


def test_dali_missing_is_reported_with_the_install_command(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name.startswith("nvidia.dali"):
            raise ImportError("No module named 'nvidia.dali'")
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    ok, why = dali_available()
    assert not ok and "pip install" in why and "nvidia-dali-cuda130" in why


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
    from bench.config import ConfigError, build_config
    with pytest.raises(ConfigError, match="flip_alternate"):
        build_config("fast", None, "full", {"data.pipeline": "dali"})
