"""Training loaders behind one interface: `len(loader)` batches, `loader.epoch(e)` yields (images, labels).

Every loader yields images normalised by the CIFAR mean/std in the training dtype and memory format,
and int64 labels, on the training device. An epoch's batches depend only on (seed, epoch).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from .augment import crop_indices, cutout_mask, gather_crop, normalize, normalize_into
from .cifar10 import MEAN, STD
from .spec import LoaderSpec, epoch_seed, loader_spec, mean_std  # noqa: F401 (re-exported: callers import them from here)


class DeviceLoader:
    """The whole split stays on the device as uint8. Per epoch: one shuffle, then crop+flip (one gather) and
    normalise+cutout (one pass) over the whole epoch in a few large chunks; the steps take slices (no per-batch ops)."""

    name = "device"
    chunk = 10_000  # images augmented per pass: bounds the temporaries (about 100 MB in fp32 at 10k)

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, spec: LoaderSpec):
        self.images, self.labels, self.spec = images, labels, spec  # (N, 3, 32, 32) uint8, (N,) int64
        self.device = images.device
        self.mean, self.std = mean_std(self.device)
        self.base_flip = spec.base_flips(len(images), self.device) if spec.flip and spec.flip_alternate else None

    def __len__(self) -> int:
        return self.spec.num_batches(len(self.images))

    def flips(self, order: torch.Tensor, epoch: int, gen: torch.Generator) -> torch.Tensor | None:
        """(N,) bool flips of the images in `order`: random, or alternating per image with the epoch."""
        if not self.spec.flip:
            return None
        if self.base_flip is not None:
            return self.base_flip[order] ^ bool(epoch % 2)
        return torch.rand(len(order), device=self.device, generator=gen) < 0.5

    def augment_into(self, out: torch.Tensor, batch: torch.Tensor, gen: torch.Generator,
                     flip: torch.Tensor | None = None) -> None:
        """uint8 (B, 3, 32, 32) -> augmented and normalised, written into `out` (B, 3, 32, 32: the training dtype
        and layout). Crop and flip are one gather from the padded image's flattened planes."""
        s = self.spec
        n, _, h, w = batch.shape
        if s.crop_padding:
            p = s.crop_padding
            padded = torch.nn.functional.pad(batch, (p, p, p, p))  # zero fill, uint8
            dy = torch.randint(0, 2 * p + 1, (n,), device=self.device, generator=gen)
            dx = torch.randint(0, 2 * p + 1, (n,), device=self.device, generator=gen)
            batch = gather_crop(padded, crop_indices(dy, h), crop_indices(dx, w, flip))  # flip in the columns
        elif flip is not None:
            batch = torch.where(flip[:, None, None, None], batch.flip(3), batch)
        mask = (cutout_mask(n, h, w, s.cutout_size, batch, gen, s.cutout_prob, s.cutout_clip)
                if s.cutout_size else None)
        normalize_into(out, batch, self.mean, self.std, mask)

    def augment_epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The epoch's shuffled, augmented images (N', 3, 32, 32) and labels (N',), N' = the images its batches use.
        Written chunk by chunk into one tensor of the training dtype and layout (no concatenation pass)."""
        gen = torch.Generator(device=self.device)
        gen.manual_seed(epoch_seed(self.spec.seed, epoch))
        n = len(self) * self.spec.batch_size if self.spec.drop_last else len(self.images)
        order = torch.randperm(len(self.images), device=self.device, generator=gen)[:n]
        flip = self.flips(order, epoch, gen)
        layout = torch.channels_last if self.spec.channels_last else torch.contiguous_format
        out = torch.empty((n, *self.images.shape[1:]), dtype=self.spec.dtype, device=self.device,
                          memory_format=layout)
        for i in range(0, n, self.chunk):
            self.augment_into(out[i:i + self.chunk], self.images[order[i:i + self.chunk]], gen,
                              None if flip is None else flip[i:i + self.chunk])
        return out, self.labels[order]

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images, labels = self.augment_epoch(epoch)
        bs = self.spec.batch_size
        for i in range(len(self)):
            yield images[i * bs:(i + 1) * bs], labels[i * bs:(i + 1) * bs]


class _PerImageDataset(torch.utils.data.Dataset):
    """The reference notebook's way: albumentations on one HWC image at a time, then a per-image cutout."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, spec: LoaderSpec):
        import albumentations as A  # the baseline's own dependency, imported where it is used
        import cv2

        self.images = np.ascontiguousarray(images.transpose(0, 2, 3, 1))  # (N, 32, 32, 3) HWC, as PIL gives
        self.labels, self.spec, self.epoch = labels, spec, 0
        steps = []
        if spec.crop_padding:
            size = 32 + 2 * spec.crop_padding
            steps += [A.PadIfNeeded(size, size, border_mode=cv2.BORDER_CONSTANT, fill=0), A.RandomCrop(32, 32)]
        if spec.flip and not spec.flip_alternate:
            steps.append(A.HorizontalFlip(p=0.5))
        self.base_flip = spec.base_flips(len(images), torch.device("cpu")).numpy() if spec.flip_alternate else None
        steps.append(A.Normalize(mean=MEAN, std=STD, max_pixel_value=255.0))
        self.transform = A.Compose(steps)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        s = self.spec
        rng = np.random.default_rng((s.seed, self.epoch, i))  # per image: same result for any worker count
        self.transform.set_random_seed(int(rng.integers(2**31)))
        x = self.transform(image=self.images[i])["image"]  # (32, 32, 3) float32, normalised
        if self.base_flip is not None and s.flip and self.base_flip[i] ^ bool(self.epoch % 2):
            x = x[:, ::-1]  # alternating flip: this image's own flip, reversed every epoch
        h, w, _ = x.shape
        if s.cutout_size and rng.random() < s.cutout_prob:
            k = s.cutout_size
            if s.cutout_clip:  # centre anywhere, square clipped at the border
                y0, x0 = rng.integers(0, h) - k // 2, rng.integers(0, w) - k // 2
            else:
                y0, x0 = rng.integers(0, h - k + 1), rng.integers(0, w - k + 1)
            x[max(y0, 0):max(y0 + k, 0), max(x0, 0):max(x0 + k, 0)] = 0.0
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), int(self.labels[i])


def _ignore_sigint(_worker_id: int) -> None:
    """Ctrl-C is the main process's to report in one line; workers end when it does, without a traceback each."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class DataLoaderPipeline:
    """The baseline: a per-image Dataset, torch DataLoader with workers and pinned memory, copy per batch."""

    name = "dataloader"

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, spec: LoaderSpec, device: torch.device,
                 workers: int = 2):
        self.dataset = _PerImageDataset(images.cpu().numpy(), labels.cpu().numpy(), spec)
        self.spec, self.device, self.workers = spec, torch.device(device), workers

    def __len__(self) -> int:
        return self.spec.num_batches(len(self.dataset))

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.dataset.epoch = epoch  # workers are forked per epoch and see it
        gen = torch.Generator()
        gen.manual_seed(epoch_seed(self.spec.seed, epoch))
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=self.spec.batch_size, shuffle=True, generator=gen,
            num_workers=self.workers, pin_memory=self.device.type == "cuda", drop_last=self.spec.drop_last,
            worker_init_fn=_ignore_sigint if self.workers else None)
        fmt = torch.channels_last if self.spec.channels_last else torch.contiguous_format
        for x, y in loader:
            x = x.to(self.device, non_blocking=True).to(dtype=self.spec.dtype, memory_format=fmt)
            yield x, y.to(self.device, non_blocking=True)


def make_loader(pipeline: str, images: torch.Tensor, labels: torch.Tensor, spec: LoaderSpec,
                workers: int = 2):
    """The training loader named by `pipeline` over images (N, 3, 32, 32) uint8 already on the device."""
    if pipeline == "device":
        return DeviceLoader(images, labels, spec)
    if pipeline == "dataloader":
        return DataLoaderPipeline(images, labels, spec, images.device, workers)
    if pipeline == "dali":
        from .dali import DaliLoader  # optional dependency
        return DaliLoader(images, labels, spec, workers)
    raise ValueError(f"unknown pipeline {pipeline!r}; choose device, dali or dataloader")


def eval_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, dtype: torch.dtype,
                 channels_last: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The test split in order, normalised, no augmentation."""
    mean, std = mean_std(images.device)
    for i in range(0, len(images), batch_size):
        yield normalize(images[i:i + batch_size], mean, std, dtype, channels_last), labels[i:i + batch_size]
