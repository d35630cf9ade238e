"""Images/s of each training pipeline over one epoch of the real training set (pytest-benchmark).

Run through `make bench-pipeline` (python -m bench pipeline-bench), which turns the JSON into rows of
results/pipeline.csv. Rounds after a warm-up round; the device is synchronised at the end of each epoch.
"""
import os

import pytest
import torch

from bench.timer import synchronize
from pipeline import LoaderSpec, load_cifar10, make_loader
from pipeline.dali import dali_available

DEVICE = torch.device(os.environ.get("BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
DALI_OK, DALI_WHY = dali_available()


@pytest.fixture(scope="module")
def data():
    return load_cifar10(os.environ.get("CIFAR10_DIR") or None, DEVICE)


@pytest.mark.parametrize("pipeline", ["device", "dali", "dataloader"])
def test_epoch_images_per_s(benchmark, data, pipeline):
    if pipeline == "dali" and not DALI_OK:
        pytest.skip(DALI_WHY)
    spec = LoaderSpec(batch_size=512, seed=0, dtype=torch.bfloat16, channels_last=True)
    loader = make_loader(pipeline, data.train_images, data.train_labels, spec,
                         workers=int(os.environ.get("BENCH_WORKERS", "2")))
    epoch = iter(range(10**6))

    def run_epoch():
        n = 0
        for x, y in loader.epoch(next(epoch)):
            n += len(y)
        synchronize(DEVICE)
        return n

    n = benchmark.pedantic(run_epoch, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    benchmark.extra_info.update(pipeline=pipeline, images=n, device_type=DEVICE.type)
