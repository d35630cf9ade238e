import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.cifar10 import (FILE_BYTES, MEAN, RECORD_BYTES, STD, TEST_FILES, TRAIN_FILES, DataError, download,
                              load_cifar10, resolve_data_dir)


def fake_records(seed: int) -> bytes:
    """10,000 valid records: label i % 10, pixels random."""
    rng = np.random.default_rng(seed)
    rec = rng.integers(0, 256, size=(10_000, RECORD_BYTES), dtype=np.uint8)
    rec[:, 0] = np.arange(10_000) % 10
    return rec.tobytes()


def make_dir(root: Path) -> Path:
    d = root / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    for i, name in enumerate(TRAIN_FILES + TEST_FILES):
        (d / name).write_bytes(fake_records(i))
    return d


def test_loads_a_valid_folder(tmp_path):
    d = make_dir(tmp_path)
    data = load_cifar10(d)
    assert data.train_images.shape == (50_000, 3, 32, 32) and data.train_images.dtype == torch.uint8
    assert data.test_labels.dtype == torch.int64 and len(data.test_labels) == 10_000
    raw = np.frombuffer(fake_records(0), np.uint8).reshape(10_000, RECORD_BYTES)
    assert torch.equal(data.train_images[7].flatten(), torch.from_numpy(raw[7, 1:].copy()))
    assert data.train_labels[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_truncated_file_names_the_file(tmp_path):
    d = make_dir(tmp_path)
    with open(d / "data_batch_3.bin", "r+b") as f:
        f.truncate(FILE_BYTES - 100)
    with pytest.raises(DataError, match=r"data_batch_3\.bin has 30,729,900 bytes.*re-extract"):
        resolve_data_dir(d)


def test_missing_file_and_folder(tmp_path):
    d = make_dir(tmp_path)
    (d / "test_batch.bin").unlink()
    with pytest.raises(DataError, match=r"test_batch\.bin is missing"):
        load_cifar10(d)
    with pytest.raises(DataError, match="does not exist"):
        load_cifar10(tmp_path / "nowhere")


def test_label_outside_0_9_is_refused(tmp_path):
    d = make_dir(tmp_path)
    with open(d / "data_batch_2.bin", "r+b") as f:
        f.seek(RECORD_BYTES * 42)
        f.write(bytes([10]))
    with pytest.raises(DataError, match=r"data_batch_2\.bin: record 42 has label byte 10"):
        load_cifar10(d)


def test_env_var_is_used(tmp_path, monkeypatch):
    d = make_dir(tmp_path)
    monkeypatch.setenv("CIFAR10_DIR", str(d))
    assert resolve_data_dir(None) == d


def make_archive(tmp_path: Path) -> tuple[Path, str]:
    src = make_dir(tmp_path / "src")
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(src, arcname="cifar-10-batches-bin")
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def test_download_verifies_and_extracts_atomically(tmp_path):
    archive, md5 = make_archive(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="MD5 .* expected 0+"):
        download(cache, archive.as_uri(), md5="0" * 32)
    assert list(cache.iterdir()) == []  # nothing half-extracted stays behind
    out = download(cache, archive.as_uri(), md5=md5)
    assert out == cache / "cifar-10-batches-bin"
    assert sorted(p.name for p in out.iterdir()) == sorted(TRAIN_FILES + TEST_FILES)
    assert [p.name for p in cache.iterdir()] == ["cifar-10-batches-bin"]
    assert download(cache, "file:///does/not/exist", md5=md5) == out  # cached: no second download


def test_unreachable_download_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="CIFAR10_DIR"):
        download(tmp_path / "cache", (tmp_path / "missing.tar.gz").as_uri())
    assert list((tmp_path / "cache").iterdir()) == []


def test_real_data_properties(cifar):
    """The checked properties of the official files (shared/data/README.md)."""
    assert cifar.train_labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert cifar.test_labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert torch.bincount(cifar.train_labels).tolist() == [5000] * 10
    assert torch.bincount(cifar.test_labels).tolist() == [1000] * 10
    px = cifar.train_images.float() / 255
    mean, std = px.mean((0, 2, 3)), px.std((0, 2, 3))
    torch.testing.assert_close(mean, torch.tensor(MEAN), atol=1e-4, rtol=0)
    torch.testing.assert_close(std, torch.tensor(STD), atol=1e-4, rtol=0)
