"""The NVIDIA DALI pipeline: external source over the in-memory uint8 arrays, crop/flip/cutout/normalise.

Optional (`pip install .[dali]`, package nvidia-dali-cuda130). Runs on the GPU when the images are on
one and CPU-only (`device_id=None`) otherwise. The epoch order comes from the same seeded permutation
as the other loaders; DALI's own random ops are seeded per (seed, epoch).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from .cifar10 import MEAN, STD
from .spec import LoaderSpec, epoch_seed

INSTALL_HINT = "pip install 'nvidia-dali-cuda130' (or `pip install .[dali]`)"


class DaliUnavailable(RuntimeError):
    """DALI is not installed or cannot run here; the message carries the install command."""


def dali_available() -> tuple[bool, str]:
    """(True, version) or (False, why and how to install)."""
    try:
        import nvidia.dali as dali
        return True, dali.__version__
    except Exception as e:  # ImportError, or a broken install raising at import
        return False, f"NVIDIA DALI is unavailable ({type(e).__name__}: {e}); install it with {INSTALL_HINT}"


class DaliLoader:
    name = "dali"

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, spec: LoaderSpec, workers: int = 2):
        ok, why = dali_available()
        if not ok:
            raise DaliUnavailable(why)
        self.device = images.device
        self.host_images = np.ascontiguousarray(images.cpu().permute(0, 2, 3, 1).numpy())  # (N, 32, 32, 3) HWC
        self.labels, self.spec, self.threads = labels, spec, max(1, workers)

    def __len__(self) -> int:
        return self.spec.num_batches(len(self.host_images))

    def _pipeline(self, order: np.ndarray, seed: int):
        from nvidia.dali import fn, pipeline_def, types

        s, bs, imgs = self.spec, self.spec.batch_size, self.host_images
        n_batches = len(self)
        on_gpu = self.device.type == "cuda"

        def source(i: int):
            if i >= n_batches:
                raise StopIteration
            return [imgs[j] for j in order[i * bs:(i + 1) * bs]]

        device_id = (self.device.index or 0) if on_gpu else None

        @pipeline_def(batch_size=bs, num_threads=self.threads, device_id=device_id,
                      seed=seed % (2**31 - 1), prefetch_queue_depth=2)
        def pipe():
            x = fn.external_source(source=source, layout="HWC", batch=True, dtype=types.UINT8)
            if on_gpu:
                x = x.gpu()
            if s.crop_padding:
                p = s.crop_padding
                anchor = fn.random.uniform(values=[float(v) for v in range(-p, p + 1)], shape=2)  # (y, x)
                x = fn.slice(x, anchor, [32.0, 32.0], axes=[0, 1], out_of_bounds_policy="pad", fill_values=0,
                             normalized_anchor=False, normalized_shape=False)
            mirror = fn.random.coin_flip(probability=0.5) if s.flip else 0
            x = fn.crop_mirror_normalize(x, dtype=types.FLOAT, output_layout="CHW", mirror=mirror,
                                         mean=[255 * m for m in MEAN], std=[255 * d for d in STD])
            if s.cutout_size:
                k = s.cutout_size
                lo, hi = (-(k // 2), 32 - k // 2) if s.cutout_clip else (0, 32 - k + 1)
                corner = fn.random.uniform(values=[float(v) for v in range(lo, hi)], shape=2)
                erased = fn.erase(x, anchor=corner, shape=[float(k), float(k)], axis_names="HW", fill_value=0.0)
                if s.cutout_prob < 1.0:
                    keep = fn.cast(fn.random.coin_flip(probability=s.cutout_prob), dtype=types.FLOAT)
                    erased = erased * keep + x * (1.0 - keep)
                x = erased
            return x

        p = pipe()
        p.build()
        return p

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        seed = epoch_seed(self.spec.seed, epoch)
        gen = torch.Generator()
        gen.manual_seed(seed)
        order = torch.randperm(len(self.host_images), generator=gen)
        order_dev = order.to(self.device)
        pipe = self._pipeline(order.numpy(), seed)
        fmt = torch.channels_last if self.spec.channels_last else torch.contiguous_format
        bs = self.spec.batch_size
        for i in range(len(self)):
            (out,) = pipe.run()
            x = self._to_torch(out)
            yield x.to(dtype=self.spec.dtype, memory_format=fmt), self.labels[order_dev[i * bs:(i + 1) * bs]]

    def _to_torch(self, out) -> torch.Tensor:
        if self.device.type == "cuda":
            from nvidia.dali.plugin.pytorch import feed_ndarray
            tensor = out.as_tensor()
            x = torch.empty(tensor.shape(), dtype=torch.float32, device=self.device)
            feed_ndarray(tensor, x, cuda_stream=torch.cuda.current_stream(self.device))
            return x
        return torch.from_numpy(out.as_array())
