"""Properties of the augmentation verbs and the training loaders over any shape, dtype, padding, cutout size, seed
and memory layout (hypothesis). References here are built by slicing, never by the code under test."""
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline import MEAN, STD, LoaderSpec, batch_crop, batch_cutout, batch_flip_lr, make_loader
from pipeline.augment import crop_indices, gather_crop

# the autouse seed fixture only seeds the global RNG, which nothing here uses; the CPU is shared, so no deadline
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
DTYPES = [torch.uint8, torch.int64, torch.float32, torch.float64, torch.bfloat16]
LAYOUTS = ["contiguous", "channels_last", "strided"]


def unique_ids(n, c, h, w, dtype):
    """Every element a different non-zero value (zero is the fill), as far as the dtype can tell them apart:
    uint8 and bf16 hold 255 exact integers, so there ids repeat beyond that."""
    ids = torch.arange(1, n * c * h * w + 1).view(n, c, h, w)
    if dtype in (torch.uint8, torch.bfloat16):
        ids = (ids - 1) % 255 + 1
    return ids.to(dtype)


def in_layout(x, layout):
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # every other column of a wider tensor: neither layout
        wide = torch.zeros(*x.shape[:3], 2 * x.shape[3], dtype=x.dtype)
        wide[..., ::2] = x
        return wide[..., ::2]
    return x.contiguous()


def assert_layout_kept(out, x):
    for fmt in (torch.contiguous_format, torch.channels_last):
        if x.is_contiguous(memory_format=fmt):
            assert out.is_contiguous(memory_format=fmt), f"{fmt}: strides {out.stride()} for input {x.stride()}"


def padded_ref(x, p, fill=0):
    """(N, C, H+2p, W+2p) of `fill` with x in the middle: padding by slicing."""
    n, c, h, w = x.shape
    out = torch.full((n, c, h + 2 * p, w + 2 * p), fill, dtype=x.dtype)
    out[:, :, p:p + h, p:p + w] = x
    return out


def window_match(out, padded, h, w):
    """(N,) bool: output image i equals some h x w window of padded image i."""
    win = padded.unfold(2, h, 1).unfold(3, w, 1)  # (N, C, H', W', h, w)
    return (win == out[:, :, None, None]).all(5).all(4).all(1).flatten(1).any(1)


images = st.tuples(st.integers(1, 5), st.integers(1, 4), st.integers(1, 9), st.integers(1, 9),
                   st.sampled_from(DTYPES), st.sampled_from(LAYOUTS))


@settings(max_examples=60, **SETTINGS)
@given(images, st.integers(0, 5), st.sampled_from([0, 3]), st.integers(0, 2**31 - 1))
def test_crop_takes_each_image_from_one_window_of_its_padded_self(img, p, fill, seed):
    n, c, h, w, dtype, layout = img
    x = in_layout(unique_ids(n, c, h, w, dtype), layout)
    src = x.clone()
    out = batch_crop(x, p, torch.Generator().manual_seed(seed), fill=fill)
    assert torch.equal(x, src) and out.shape == x.shape and out.dtype == dtype
    assert_layout_kept(out, x)
    assert bool(window_match(out, padded_ref(src, p, fill), h, w).all())
    assert torch.equal(out, batch_crop(x, p, torch.Generator().manual_seed(seed), fill=fill))  # the seed decides


@settings(max_examples=60, **SETTINGS)
@given(images, st.integers(0, 5), st.integers(0, 2**31 - 1))
def test_a_flipped_crop_is_the_crop_of_the_flipped_image(img, p, seed):
    """The gather with flip fused (what the device loader trains on) == the mirror of the plain crop == the crop at
    the mirrored offset of the mirrored padded image."""
    n, c, h, w, dtype, layout = img
    g = torch.Generator().manual_seed(seed)
    padded = padded_ref(in_layout(unique_ids(n, c, h, w, dtype), layout), p)
    dy, dx = torch.randint(0, 2 * p + 1, (2, n), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    rows = crop_indices(dy, h)
    fused = gather_crop(padded, rows, crop_indices(dx, w, flip))
    plain = gather_crop(padded, rows, crop_indices(dx, w))
    assert torch.equal(fused[~flip], plain[~flip]) and torch.equal(fused[flip], plain[flip].flip(3))
    mirrored = gather_crop(padded.flip(3), rows, crop_indices(2 * p - dx, w))
    assert torch.equal(fused[flip], mirrored[flip])


@settings(max_examples=40, **SETTINGS)
@given(images, st.floats(0, 1), st.integers(0, 2**31 - 1))
def test_flip_gives_each_image_or_its_mirror(img, prob, seed):
    n, c, h, w, dtype, layout = img
    x = in_layout(unique_ids(n, c, h, w, dtype), layout)
    torch.manual_seed(seed)
    expected_next = torch.rand(1)
    torch.manual_seed(seed)
    out = batch_flip_lr(x, torch.Generator().manual_seed(seed), p=prob)
    assert torch.equal(torch.rand(1), expected_next)  # the generator drew the coins, not the global RNG
    assert torch.equal(out, batch_flip_lr(x, torch.Generator().manual_seed(seed), p=prob))
    assert out.dtype == dtype
    assert_layout_kept(out, x)
    same = (out == x).flatten(1).all(1)
    mirror = (out == x.flip(3)).flatten(1).all(1)
    assert bool((same | mirror).all())
    if prob == 0:
        assert bool(same.all())
    if prob == 1:
        assert bool(mirror.all())


@settings(max_examples=60, **SETTINGS)
@given(images, st.integers(0, 12), st.booleans(), st.integers(0, 2**31 - 1))
def test_cutout_fills_one_clipped_square_in_every_channel_and_keeps_the_rest(img, size, clip, seed):
    n, c, h, w, dtype, layout = img
    if not clip:
        size = min(size, h, w)  # wholly inside: the square must fit
    x = in_layout(unique_ids(n, c, h, w, dtype), layout)
    torch.manual_seed(seed)
    expected_next = torch.rand(1)
    torch.manual_seed(seed)
    out = batch_cutout(x, size, torch.Generator().manual_seed(seed), clip=clip, prob=0.5)
    assert torch.equal(torch.rand(1), expected_next)  # the generator placed the squares, not the global RNG
    assert torch.equal(out, batch_cutout(x, size, torch.Generator().manual_seed(seed), clip=clip, prob=0.5))
    assert out.dtype == dtype and out.shape == x.shape
    assert_layout_kept(out, x)
    hole = out == 0  # the ids have no zero
    assert bool((hole == hole[:, :1]).all())  # every channel or none
    assert torch.equal(out[~hole], x[~hole])
    hole = hole[:, 0]  # (N, H, W)
    rows, cols = hole.any(2), hole.any(1)
    assert torch.equal(hole, rows[:, :, None] & cols[:, None, :])  # a rectangle (or nothing)
    assert int(rows.sum(1).max()) <= size and int(cols.sum(1).max()) <= size
    if not clip:  # prob 0.5: a full square or none
        assert bool(((hole.sum((1, 2)) == size * size) | (hole.sum((1, 2)) == 0)).all())
    elif size:
        # the centre is inside the image, so at least the half of the square on its side of the centre shows
        some = hole.flatten(1).any(1)
        assert bool((rows.sum(1)[some] >= min(h, (size + 1) // 2)).all())
        assert bool((cols.sum(1)[some] >= min(w, (size + 1) // 2)).all())


@settings(max_examples=8, **SETTINGS)
@example("device", 1, 2, 0, 0, False, True, False, 0)  # no batch at all (drop_last): an empty epoch, not a crash
@given(st.sampled_from(["device", "dataloader"]), st.integers(1, 24), st.integers(1, 16), st.integers(0, 4),
       st.integers(0, 10), st.booleans(), st.booleans(), st.booleans(), st.integers(0, 2**31 - 1))
def test_loader_batches_are_crops_of_their_own_images(pipeline, n, batch_size, p, cutout, alternate, drop_last,
                                                      channels_last, seed):
    """Any batch size, padding, cutout, flip rule, layout and seed: each image in a batch carries its label, keeps
    the asked layout, and is a crop of its own source or of its mirror, except for a cutout hole (zero, the mean)."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(1, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    s = LoaderSpec(batch_size=batch_size, crop_padding=p, cutout_size=cutout, flip_alternate=alternate,
                   drop_last=drop_last, seed=seed % 1000, dtype=torch.float32, channels_last=channels_last)
    loader = make_loader(pipeline, src, torch.arange(n), s, workers=0)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    seen = []
    for x, idx in loader.epoch(seed % 3):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        assert x.dtype == torch.float32 and x.is_contiguous(memory_format=fmt) and len(x) <= batch_size
        hole = (x == 0).all(1, keepdim=True)  # (B, 1, 32, 32)
        assert int(hole.flatten(1).sum(1).max()) <= cutout * cutout
        px = torch.round((x * std + mean) * 255)
        out = torch.where(hole, -1.0, px)  # -1: matches nothing, so hole pixels are masked below
        for mirror in (False, True):
            img = src[idx].flip(3) if mirror else src[idx]
            win = padded_ref(img.float(), p).unfold(2, 32, 1).unfold(3, 32, 1)  # (B, 3, 2p+1, 2p+1, 32, 32)
            ok = ((win == out[:, :, None, None]) | hole[:, :, None, None]).all(5).all(4).all(1).flatten(1).any(1)
            if mirror:
                found |= ok
            else:
                found = ok
        assert bool(found.all())
        seen.append(idx)
    seen = torch.cat(seen) if seen else torch.zeros(0, dtype=torch.long)
    assert len(seen) == len(loader) * batch_size if drop_last else torch.equal(seen.sort().values, torch.arange(n))
    assert len(seen.unique()) == len(seen)
