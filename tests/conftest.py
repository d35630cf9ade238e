"""Shared fixtures. Triton's interpreter must be chosen before any kernel is defined, so it is set here."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# make test runs one pytest-xdist worker per core: each worker's intra-op pool takes its share of the cores, so that
# two workers' pools do not contend for the same two (run on one core, a 2-thread pool stalls at every barrier)
# (the commands a test starts take the same share). The cores this process may use, not the host's.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    threads = max(1, len(os.sched_getaffinity(0)) // WORKERS)
    torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))



def pytest_collection_modifyitems(config, items):
    """Tests marked `long` first (otherwise in collection order): pytest-xdist hands the first tests out to its
    workers in turn, so the few that take minutes start at once on different workers, instead of one starting last
    while the other worker waits idle."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data" / "cifar-10-batches-bin"


def real_data_dir() -> Path | None:
    """$CIFAR10_DIR, else the shared copy beside the repository, else None."""
    env = os.environ.get("CIFAR10_DIR")
    if env:
        return Path(env).resolve()  # absolute: tests symlink its files from elsewhere
    return SHARED_DATA if SHARED_DATA.is_dir() else None


@pytest.fixture
def cifar_dir() -> Path:
    path = real_data_dir()
    if path is None:
        pytest.skip(f"real CIFAR-10 not found: set CIFAR10_DIR or place it at {SHARED_DATA}")
    return path


@pytest.fixture(scope="session")
def cifar():
    """The real data set on the CPU, loaded once per session."""
    from pipeline import load_cifar10
    path = real_data_dir()
    if path is None:
        pytest.skip(f"real CIFAR-10 not found: set CIFAR10_DIR or place it at {SHARED_DATA}")
    return load_cifar10(path, "cpu")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# Triton kernels run compiled on CUDA, or interpreted on CPU tensors when no GPU is visible (not both at once)
TRITON_DEVICES = ["cuda"] if torch.cuda.is_available() else ["cpu"]
TRITON_DEVICE = TRITON_DEVICES[0]
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; none is visible")


def random_cifar(n_train: int = 128, n_test: int = 64):
    """A CIFAR-10-shaped data set of random pixels and labels, on the CPU: for runs whose accuracy is not the point."""
    from pipeline.cifar10 import CIFAR10
    g = torch.Generator().manual_seed(0)
    return CIFAR10(torch.randint(0, 256, (n_train, 3, 32, 32), dtype=torch.uint8, generator=g),
                   torch.randint(0, 10, (n_train,), generator=g),
                   torch.randint(0, 256, (n_test, 3, 32, 32), dtype=torch.uint8, generator=g),
                   torch.randint(0, 10, (n_test,), generator=g))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float, what: str = "") -> None:
    """torch.testing.assert_close, reporting the worst element (index, values) on failure."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    err = (a - e).abs() - (atol + rtol * e.abs())
    if not torch.isfinite(a).all() or (err > 0).any():
        bad = torch.where(torch.isfinite(a), err, torch.full_like(err, float("inf")))
        idx = tuple(int(i) for i in torch.unravel_index(bad.argmax(), a.shape))
        raise AssertionError(f"{what}: worst element {idx}: got {a[idx].item():.8g}, expected {e[idx].item():.8g} "
                             f"(rtol {rtol}, atol {atol}); {(err > 0).sum().item()} of {a.numel()} elements off")
