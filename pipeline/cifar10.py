"""CIFAR-10 in the official binary layout: find it, download and verify it, load it as uint8 tensors."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILES = ("test_batch.bin",)
RECORD_BYTES = 1 + 3 * 32 * 32  # label byte + 1,024 red, 1,024 green, 1,024 blue
RECORDS_PER_FILE = 10_000
FILE_BYTES = RECORD_BYTES * RECORDS_PER_FILE  # 30,730,000
META_FILE = "batches.meta.txt"  # class names; the seventh file of the official folder
# MD5 of each file as extracted from the official archive (its sha256s are in shared/data/README.md)
OFFICIAL_MD5 = {
    "data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25", "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
    "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421", "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
    "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d", "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
    META_FILE: "40a0b180e208fe03a63ecc891b2555ad",
}
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MEAN = (0.4914, 0.4822, 0.4465)  # of train pixels / 255
STD = (0.2470, 0.2435, 0.2616)


class DataError(RuntimeError):
    """The data set is missing, truncated or corrupt; the message names the file and what to do."""


@dataclass
class CIFAR10:
    """Both splits: images uint8 (N, 3, 32, 32), labels int64 (N,), on one device."""
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: Path | None = None  # the folder it was read from (its data_fingerprint goes into each row)

    def to(self, device: torch.device | str) -> "CIFAR10":
        return CIFAR10(*(t.to(device) for t in (self.train_images, self.train_labels,
                                                 self.test_images, self.test_labels)), source=self.source)

    def subset(self, train: int = 0, test: int = 0) -> "CIFAR10":
        """The first `train` / `test` images of each split (0 keeps the split whole)."""
        tr = slice(None) if train == 0 else slice(0, train)
        te = slice(None) if test == 0 else slice(0, test)
        return CIFAR10(self.train_images[tr], self.train_labels[tr], self.test_images[te], self.test_labels[te],
                       source=self.source)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cifar10-speedrun"


def _not_a_file(f: Path) -> str | None:
    """What keeps `f` from being a readable data file, in words ('is missing', 'is a folder, not a file', ...), or
    None: the refusal names the actual problem, since the fixes differ (extract again, move a folder away)."""
    if f.is_dir():
        return "is a folder, not a file"
    if f.is_symlink() and not f.exists():
        return f"is a link to {os.readlink(f)}, which does not exist"
    if not f.exists():
        return "is missing"
    if not f.is_file():
        return "is not a regular file (a pipe or device)"
    return None


def verify_dir(path: Path, given_as: str = "") -> Path:
    """Check that all six files are there with exactly 30,730,000 bytes each; return the path.
    `given_as` names where the path came from (CIFAR10_DIR, --data.data_dir) for the refusal."""
    fix = ("pass --data.data_dir=<the cifar-10-batches-bin folder holding data_batch_1.bin ... test_batch.bin> "
           "or unset CIFAR10_DIR to download the data set")
    folder = f"CIFAR-10 folder {path}" + (f" ({given_as})" if given_as else "")
    if path.is_file():
        raise DataError(f"{folder} is a file, not a folder; {fix}")
    if path.is_symlink() and not path.exists():
        raise DataError(f"{folder} is a link to {os.readlink(path)}, which does not exist; {fix}")
    if not path.is_dir():
        raise DataError(f"{folder} {'does not exist' if not path.exists() else 'is not a folder'}; {fix}")
    for name in TRAIN_FILES + TEST_FILES:
        f = path / name
        problem = _not_a_file(f)
        if problem == "is missing":
            raise DataError(f"{f} is missing; the folder must hold the official binary layout "
                            f"(data_batch_1..5.bin, test_batch.bin): re-extract cifar-10-binary.tar.gz there")
        if problem:
            raise DataError(f"{f} {problem}; the folder must hold the official files (data_batch_1..5.bin, "
                            f"test_batch.bin): move it away and re-extract cifar-10-binary.tar.gz there")
        size = f.stat().st_size
        if size != FILE_BYTES:
            raise DataError(f"{f} has {size:,} bytes, expected {FILE_BYTES:,} (10,000 records of 3,073 bytes): "
                            f"the file is truncated or not CIFAR-10; re-extract cifar-10-binary.tar.gz")
        try:
            open(f, "rb").close()
        except OSError as e:
            raise _unreadable(f, e) from None
    return path


def _unreadable(path: Path, e: OSError) -> DataError:
    if isinstance(e, IsADirectoryError):  # no permission would make a folder readable as data
        return DataError(f"{path} is a folder, not a file: move it away and re-extract cifar-10-binary.tar.gz there")
    return DataError(f"cannot read {path} ({e.strerror or e}): give this user read access to it "
                     f"(chmod a+r) or pass another copy with --data.data_dir")


def md5_of(path: Path) -> str:
    h = hashlib.md5()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise _unreadable(path, e) from None
    return h.hexdigest()


def _md5_cache_path() -> Path:
    return default_cache_dir() / "md5.json"


def file_md5s(path: Path, names: tuple[str, ...] = tuple(OFFICIAL_MD5), use_cache: bool = True) -> dict[str, str]:
    """MD5 of each named file, hashed once per file state: cached by (absolute path, size, mtime) in the user's
    cache folder, so a changed file is hashed again and an unchanged one costs a stat (180 MB is ~1 s of MD5).
    The cache is input like any other: whatever it holds that is not an entry of this form is ignored and rebuilt;
    `use_cache=False` hashes every file (and refreshes the cache)."""
    cache_file = _md5_cache_path()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict):
        cache = {}
    out, changed = {}, False
    for name in names:
        problem = _not_a_file(path / name)
        if problem:
            raise DataError(f"{path / name} {problem}; the folder must hold the official files "
                            f"({', '.join(names)}): {'' if problem == 'is missing' else 'move it away and '}"
                            f"re-extract cifar-10-binary.tar.gz there")
        f = (path / name).resolve()
        try:
            st = f.stat()
        except OSError as e:
            raise _unreadable(f, e) from None
        state = [st.st_size, st.st_mtime_ns]
        hit = cache.get(str(f))
        valid = (use_cache and isinstance(hit, dict) and hit.get("state") == state and isinstance(hit.get("md5"), str)
                 and re.fullmatch(r"[0-9a-f]{32}", hit["md5"]) is not None)
        if not valid:
            hit, changed = {"state": state, "md5": md5_of(f)}, True
            cache[str(f)] = hit
        out[name] = hit["md5"]
    if changed:
        _save_md5_cache(cache_file, cache)
    return out


def _save_md5_cache(cache_file: Path, cache: dict) -> None:
    """Replace the cache in one rename, best effort: a cache is an optimisation, so one that cannot be written
    (a folder in its place, a read-only or full disk) only costs the hashing next time, and never leaves its
    temporary file behind."""
    if cache_file.is_dir():  # os.replace cannot put a file there; it would fail after writing the temporary
        return
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        for old in cache_file.parent.glob(f".{cache_file.name}.*.tmp"):  # left by a writer killed mid-way
            try:
                if time.time() - old.stat().st_mtime > 60:  # a live write takes milliseconds
                    old.unlink()
            except OSError:  # another process removed or replaced it first
                pass
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, prefix=f".{cache_file.name}.", suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(cache, sort_keys=True))
        os.replace(tmp, cache_file)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if not isinstance(e, OSError):  # Ctrl-C, SIGTERM: still theirs to handle
            raise


def verify_md5(path: Path, expected: dict[str, str] | None = None) -> Path:
    """Check the seven files of the folder against the official MD5s (pixel corruption keeps size and labels)."""
    expected = OFFICIAL_MD5 if expected is None else expected
    got = file_md5s(path, tuple(expected))
    wrong = tuple(n for n, md5 in expected.items() if got[n] != md5)
    if wrong:  # a refusal is never the cache's word alone: those files are hashed again
        got.update(file_md5s(path, wrong, use_cache=False))
    for name, md5 in expected.items():
        if got[name] != md5:
            raise DataError(f"{path / name} has MD5 {got[name]}, the official file has {md5}: it is corrupt or "
                            f"not the official CIFAR-10; re-extract cifar-10-binary.tar.gz there")
    return path


def data_fingerprint(path: Path) -> str:
    """A short id of the data a run read: the MD5 of the six data files' MD5s, in file order (cached hashing).

    Official data gives official_fingerprint(); any other value means the run read other bytes."""
    md5s = file_md5s(Path(path), TRAIN_FILES + TEST_FILES)
    return _fingerprint([md5s[n] for n in TRAIN_FILES + TEST_FILES])


def official_fingerprint() -> str:
    return _fingerprint([OFFICIAL_MD5[n] for n in TRAIN_FILES + TEST_FILES])


def _fingerprint(md5s: list[str]) -> str:
    return "md5:" + hashlib.md5(" ".join(md5s).encode()).hexdigest()[:12]


def download(cache_dir: Path | None = None, url: str = URL, md5: str = MD5) -> Path:
    """Download and verify the official archive, extract atomically; return the cifar-10-batches-bin folder.

    The archive goes to a temporary file and is extracted into a temporary folder, which is renamed
    into place only once complete, so an interrupted or corrupt download leaves nothing behind.
    """
    cache_dir = Path(cache_dir or default_cache_dir())
    final = cache_dir / "cifar-10-batches-bin"
    if final.is_dir():
        return verify_dir(final)
    if final.exists() or final.is_symlink():  # the extracted folder could never be renamed into place
        raise DataError(f"{final} is in the way of the downloaded data set (not a folder): move it away, or pass "
                        f"a local copy with --data.data_dir or CIFAR10_DIR")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        archive = Path(tmp) / "cifar-10-binary.tar.gz"
        print(f"downloading {url} -> {cache_dir}")
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(archive, "wb") as out:
                shutil.copyfileobj(resp, out, 1 << 20)
        except OSError as e:
            raise DataError(f"could not download {url}: {e}; download cifar-10-binary.tar.gz by hand, extract "
                            f"it and pass its cifar-10-batches-bin folder with --data.data_dir or CIFAR10_DIR") from e
        got = md5_of(archive)
        if got != md5:
            raise DataError(f"{url} downloaded with MD5 {got}, expected {md5}: the download is corrupt or not "
                            f"the official archive; nothing was kept, run again or pass a local copy via CIFAR10_DIR")
        extract = Path(tmp) / "extract"
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(extract, filter="data")
        verify_dir(extract / "cifar-10-batches-bin")
        try:
            os.rename(extract / "cifar-10-batches-bin", final)
        except OSError:  # another process finished first
            if not final.is_dir():
                raise
    return verify_dir(final)


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder to read: the argument, else $CIFAR10_DIR, else the verified download in the cache."""
    chosen = data_dir or os.environ.get("CIFAR10_DIR")
    if chosen:
        return verify_dir(Path(chosen), "--data.data_dir" if data_dir else "CIFAR10_DIR")
    return download()


def read_batch_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One official .bin file -> images uint8 (N, 3, 32, 32), labels int64 (N,)."""
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise _unreadable(path, e) from None
    if raw.size != FILE_BYTES:
        raise DataError(f"{path} has {raw.size:,} bytes, expected {FILE_BYTES:,}; re-extract the archive")
    records = raw.reshape(RECORDS_PER_FILE, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise DataError(f"{path}: record {bad[0]} has label byte {labels[bad[0]]}, outside 0-9 "
                        f"({bad.size} such records); the file is corrupt, re-extract cifar-10-binary.tar.gz")
    images = records[:, 1:].reshape(RECORDS_PER_FILE, 3, 32, 32)
    return images, labels


def load_split(data_dir: Path, files: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [read_batch_file(data_dir / name) for name in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(images), torch.from_numpy(labels)


def load_cifar10(data_dir: str | os.PathLike | None = None, device: torch.device | str = "cpu") -> CIFAR10:
    """Load both splits once, as uint8 images and int64 labels on `device`."""
    path = resolve_data_dir(data_dir)
    train = load_split(path, TRAIN_FILES)
    test = load_split(path, TEST_FILES)
    return CIFAR10(*train, *test, source=path).to(device)
