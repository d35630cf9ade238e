"""Batched augmentation verbs on NCHW tensors of any device, dtype and memory format; none modifies its input, and
each returns the input's memory format (channels-last in, channels-last out: gather and masked_fill return NCHW).

Random numbers come from `generator` (on the images' device) so that epochs are reproducible.
"""
from __future__ import annotations

import torch


def _rand(n: int, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, device=images.device, generator=generator)


def _randint(high: int, n: int, images: torch.Tensor, generator: torch.Generator | None,
             low: int = 0) -> torch.Tensor:
    return torch.randint(low, high, (n,), device=images.device, generator=generator)


def keep_layout(out: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """`out` in the memory format of `images` (a copy only where they differ)."""
    cl = images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
    return out.contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)


def crop_indices(offsets: torch.Tensor, size: int, flip: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) offsets -> (N, size) source indices, reversed where `flip` is set (flip fused into the gather)."""
    ar = torch.arange(size, device=offsets.device)
    idx = offsets[:, None] + ar
    if flip is not None:
        idx = torch.where(flip[:, None], offsets[:, None] + (size - 1) - ar, idx)
    return idx


def gather_crop(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """images (N, C, H, W), rows (N, h), cols (N, w) -> (N, C, h, w), NCHW: one gather from each image's flattened
    planes (a view of contiguous images), no Python loop."""
    n, c, _, w = images.shape
    h2, w2 = rows.shape[1], cols.shape[1]
    flat = (rows[:, :, None] * w + cols[:, None, :]).view(n, 1, h2 * w2)
    return images.reshape(n, c, -1).gather(2, flat.expand(n, c, h2 * w2)).view(n, c, h2, w2)


def batch_crop(images: torch.Tensor, padding: int, generator: torch.Generator | None = None,
               fill: float = 0) -> torch.Tensor:
    """Random crop of the original size from the image padded by `padding` (fill value) on every side.

    Each image gets its own offset, uniform over all (2 * padding + 1)^2 positions.
    """
    if padding == 0:
        return images.clone()
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4, value=fill)  # (N, C, H+2p, W+2p)
    dy = _randint(2 * padding + 1, n, images, generator)
    dx = _randint(2 * padding + 1, n, images, generator)
    return keep_layout(gather_crop(padded, crop_indices(dy, h), crop_indices(dx, w)), images)


def batch_flip_lr(images: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability p."""
    flip = _rand(images.shape[0], images, generator) < p
    return keep_layout(torch.where(flip[:, None, None, None], images.flip(3), images), images)


def cutout_mask(n: int, h: int, w: int, size: int, images: torch.Tensor, generator: torch.Generator | None,
                prob: float = 1.0, clip: bool = True) -> torch.Tensor:
    """(N, H, W) bool mask of one size x size square per image (in a `prob` share of the images).

    clip=True: the square's centre is uniform over the image and the square is clipped at the border
    (DeVries & Taylor 2017, and the reference). clip=False: the square lies wholly inside the image,
    its top-left corner uniform over the (H - size + 1) x (W - size + 1) positions.
    """
    if clip:
        y0 = _randint(h, n, images, generator) - size // 2
        x0 = _randint(w, n, images, generator) - size // 2
    else:
        y0 = _randint(h - size + 1, n, images, generator)
        x0 = _randint(w - size + 1, n, images, generator)
    ys = torch.arange(h, device=images.device)
    xs = torch.arange(w, device=images.device)
    in_y = (ys >= y0[:, None]) & (ys < y0[:, None] + size)  # (N, H)
    in_x = (xs >= x0[:, None]) & (xs < x0[:, None] + size)  # (N, W)
    mask = in_y[:, :, None] & in_x[:, None, :]
    if prob < 1.0:
        mask &= (_rand(n, images, generator) < prob)[:, None, None]
    return mask


def batch_cutout(images: torch.Tensor, size: int, generator: torch.Generator | None = None,
                 fill: float = 0, prob: float = 1.0, clip: bool = True) -> torch.Tensor:
    """Set a size x size square of each image (all channels) to `fill`; see `cutout_mask` for placement."""
    if size == 0:
        return images.clone()
    n, _, h, w = images.shape
    mask = cutout_mask(n, h, w, size, images, generator, prob, clip)
    return keep_layout(images.masked_fill(mask[:, None], fill), images)


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, dtype: torch.dtype,
              channels_last: bool, mask: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (N, C, H, W) -> (x / 255 - mean) / std in `dtype`, zero (the mean) under `mask` (N, H, W): a new
    tensor in that dtype and layout, filled by `normalize_into`."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty(images.shape, dtype=dtype, device=images.device, memory_format=fmt)
    normalize_into(out, images, mean, std, mask)
    return out


def normalize_into(out: torch.Tensor, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                   mask: torch.Tensor | None = None) -> None:
    """uint8 images normalised as `normalize` says, written into `out` (its dtype and layout). fp32: the uint8
    copied into `out` (layout included), then scale, shift and mask in place: no temporary. Other dtypes:
    computed in fp32, cast once by the copy into `out` (a reduced-precision intermediate would round twice)."""
    scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1)
    shift = (mean / std).view(1, -1, 1, 1)
    if out.dtype == torch.float32:
        x = out.copy_(images)
        x.mul_(scale).sub_(shift)
    else:
        x = torch.mul(images, scale).sub_(shift)  # uint8 x fp32 -> fp32
    if mask is not None:
        x.masked_fill_(mask[:, None], 0.0)
    if x is not out:
        out.copy_(x)
