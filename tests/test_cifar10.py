import hashlib
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import cifar10
from pipeline.cifar10 import (FILE_BYTES, MEAN, RECORD_BYTES, STD, TEST_FILES, TRAIN_FILES, DataError, data_fingerprint,
                              download, load_cifar10, official_fingerprint, resolve_data_dir, verify_md5)


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


@pytest.fixture
def md5_calls(tmp_path, monkeypatch):
    """A private MD5 cache, and the files actually hashed."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls, real = [], cifar10.md5_of
    monkeypatch.setattr(cifar10, "md5_of", lambda path: calls.append(Path(path).name) or real(path))
    return calls


def rewrite(path: Path, data: bytes) -> None:
    """Same size, other bytes, and a later mtime (as any edit gives)."""
    st = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def test_md5s_are_checked_once_per_file_state(tmp_path, md5_calls):
    d = tmp_path / "d"
    d.mkdir()
    for name in ("a.bin", "b.bin"):
        (d / name).write_bytes(name.encode() * 100)
    expected = {n: hashlib.md5(n.encode() * 100).hexdigest() for n in ("a.bin", "b.bin")}
    assert verify_md5(d, expected) == d and sorted(md5_calls) == ["a.bin", "b.bin"]
    assert verify_md5(d, expected) == d and len(md5_calls) == 2  # unchanged: no hashing
    rewrite(d / "b.bin", b"x" * 500)  # one corrupt byte range, size unchanged: only the MD5 tells
    with pytest.raises(DataError, match=r"b\.bin has MD5 .*, the official file has .*re-extract"):
        verify_md5(d, expected)
    assert md5_calls[2:] == ["b.bin", "b.bin"]  # its new state, then once more before refusing


@pytest.mark.parametrize("content", ["[1, 2]", "null", "not json", '"text"', "{bad}", "OTHER_PATH",
                                     "WRONG_MD5", "NUMBER_MD5", "LIST_ENTRY"])
def test_any_checksum_cache_content_is_ignored_or_rebuilt(tmp_path, md5_calls, content):
    """The cache is input: whatever it holds, the official files are accepted, bad ones refused."""
    import json
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.bin").write_bytes(b"a" * 100)
    expected = {"a.bin": hashlib.md5(b"a" * 100).hexdigest()}
    assert verify_md5(d, expected) == d
    cache = tmp_path / "cache" / "cifar10-speedrun" / "md5.json"
    key, entry = next(iter(json.loads(cache.read_text()).items()))
    forged = {"OTHER_PATH": {"/elsewhere": entry}, "WRONG_MD5": {key: {**entry, "md5": "0" * 32}},
              "NUMBER_MD5": {key: {**entry, "md5": 12}}, "LIST_ENTRY": {key: [entry]}}
    cache.write_text(json.dumps(forged[content]) if content in forged else content)
    assert verify_md5(d, expected) == d
    (d / "a.bin").write_bytes(b"b" * 100)
    with pytest.raises(DataError, match="a.bin has MD5"):
        verify_md5(d, expected)


def test_real_data_has_the_official_md5s_and_fingerprint(cifar_dir, md5_calls):
    assert verify_md5(cifar_dir) == cifar_dir and len(md5_calls) == 7  # six data files and batches.meta.txt
    assert data_fingerprint(cifar_dir) == official_fingerprint() and len(md5_calls) == 7
    assert load_cifar10(cifar_dir).subset(10, 10).to("cpu").source == cifar_dir  # where a row's fingerprint comes from


def sparse_dir(root: Path) -> Path:
    """The six files at their exact size, all zeros (label 0, black pixels), written in no time."""
    root.mkdir()
    for name in TRAIN_FILES + TEST_FILES:
        with open(root / name, "wb") as f:
            f.truncate(FILE_BYTES)
    return root


def test_fingerprint_follows_the_bytes(tmp_path, md5_calls):
    d = sparse_dir(tmp_path / "d")
    before = data_fingerprint(d)
    assert before.startswith("md5:") and before != official_fingerprint()
    raw = bytearray(FILE_BYTES)
    raw[RECORD_BYTES + 1] = 7  # one pixel of one image
    rewrite(d / "test_batch.bin", bytes(raw))
    assert data_fingerprint(d) != before


def test_unreadable_file_is_a_data_error(tmp_path, monkeypatch):
    d = sparse_dir(tmp_path / "d")
    real_open = open

    def denied(path, *a, **k):  # root reads any file: simulate one this user may not read
        if Path(path).name == "data_batch_2.bin":
            raise PermissionError(13, "Permission denied")
        return real_open(path, *a, **k)
    monkeypatch.setattr(cifar10, "open", denied, raising=False)
    with pytest.raises(DataError, match=r"cannot read .*data_batch_2\.bin \(Permission denied\).*chmod"):
        load_cifar10(d)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files without read permission")
def test_unreadable_file_by_permissions(tmp_path):
    d = sparse_dir(tmp_path / "d")
    (d / "data_batch_2.bin").chmod(0)
    with pytest.raises(DataError, match=r"cannot read .*data_batch_2\.bin"):
        load_cifar10(d)


def small_dir(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.bin").write_bytes(b"a" * 100)
    return d, {"a.bin": hashlib.md5(b"a" * 100).hexdigest()}


def test_a_checksum_cache_that_is_a_folder_is_ignored_without_litter(tmp_path, md5_calls):
    d, expected = small_dir(tmp_path)
    cache = tmp_path / "cache" / "cifar10-speedrun" / "md5.json"
    cache.mkdir(parents=True)
    (cache / "inside").write_text("someone's file")
    for _ in range(2):
        assert verify_md5(d, expected) == d  # the data is still checked, by hashing each time
    assert md5_calls == ["a.bin", "a.bin"]
    assert [p.name for p in cache.parent.iterdir()] == ["md5.json"]  # no temporary file beside it
    assert [p.name for p in cache.iterdir()] == ["inside"] and (cache / "inside").read_text() == "someone's file"
    (d / "a.bin").write_bytes(b"b" * 100)
    with pytest.raises(DataError, match="a.bin has MD5"):  # a changed file is still refused
        verify_md5(d, expected)


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_cache_write_that_fails_leaves_no_temporary_file(tmp_path, md5_calls, monkeypatch, failure):
    d, expected = small_dir(tmp_path)

    def replace(src, dst):
        raise failure
    monkeypatch.setattr(cifar10.os, "replace", replace)
    if isinstance(failure, OSError):
        assert verify_md5(d, expected) == d  # the cache only saves time: its failure is not the data's
    else:
        with pytest.raises(KeyboardInterrupt):  # Ctrl-C is still Ctrl-C
            verify_md5(d, expected)
    assert list((tmp_path / "cache" / "cifar10-speedrun").iterdir()) == []


def test_a_stale_temporary_cache_file_is_removed_by_the_next_write(tmp_path, md5_calls):
    d, expected = small_dir(tmp_path)
    folder = tmp_path / "cache" / "cifar10-speedrun"
    folder.mkdir(parents=True)
    stale, live = folder / ".md5.json.123.tmp", folder / ".md5.json.456.tmp"
    stale.write_text("{")
    live.write_text("{")
    os.utime(stale, (1e9, 1e9))  # a writer killed long ago; `live` may be another process writing now
    assert verify_md5(d, expected) == d
    assert sorted(p.name for p in folder.iterdir()) == [".md5.json.456.tmp", "md5.json"]


def test_a_data_dir_that_is_a_file_says_so(tmp_path, monkeypatch):
    d = sparse_dir(tmp_path / "d")
    monkeypatch.setenv("CIFAR10_DIR", str(d / "data_batch_1.bin"))
    with pytest.raises(DataError, match=r"data_batch_1\.bin \(CIFAR10_DIR\) is a file, not a folder; pass "):
        resolve_data_dir(None)
    with pytest.raises(DataError, match=r"data_batch_1\.bin \(--data\.data_dir\) is a file, not a folder"):
        resolve_data_dir(d / "data_batch_1.bin")
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"gone \(--data\.data_dir\) is a link to .*nowhere, which does not exist"):
        resolve_data_dir(tmp_path / "gone")
    assert resolve_data_dir(d) == d  # the control: the folder itself is accepted


@pytest.mark.parametrize("name", ["data_batch_3.bin", "test_batch.bin"])
def test_a_data_file_that_is_a_folder_says_so(tmp_path, name):
    d = sparse_dir(tmp_path / "d")
    (d / name).unlink()
    (d / name).mkdir()
    with pytest.raises(DataError, match=rf"{name} is a folder, not a file; .*move it away"):
        resolve_data_dir(d)


def test_a_data_file_that_is_a_broken_link_says_so(tmp_path):
    d = sparse_dir(tmp_path / "d")
    (d / "data_batch_2.bin").unlink()
    (d / "data_batch_2.bin").symlink_to(tmp_path / "elsewhere.bin")
    with pytest.raises(DataError, match=r"data_batch_2\.bin is a link to .*elsewhere\.bin, which does not exist"):
        resolve_data_dir(d)


def test_a_checked_file_that_is_a_folder_says_so_in_the_md5_check(tmp_path, md5_calls):
    """batches.meta.txt is checked by MD5 only (verify_dir looks at the six data files): a folder in its place is
    named as one, not as unreadable for lack of permission."""
    d, expected = small_dir(tmp_path)
    (d / "meta.txt").mkdir()
    with pytest.raises(DataError, match=r"meta\.txt is a folder, not a file"):
        verify_md5(d, {**expected, "meta.txt": "0" * 32})


def test_a_download_folder_in_the_way_says_so(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "cifar-10-batches-bin").write_text("x")
    with pytest.raises(DataError, match=r"cifar-10-batches-bin is in the way .*move it away"):
        download(tmp_path / "cache", (tmp_path / "never-fetched.tar.gz").as_uri())
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["cifar-10-batches-bin"]


def test_the_cli_names_the_problem_in_one_line(tmp_path, capsys, monkeypatch):
    """As a user types it: CIFAR10_DIR at a file, then a folder named like a data file."""
    from bench.cli import main
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    d = sparse_dir(tmp_path / "d")
    argv = ["run", "--dry-run", "--profile=smoke", f"--results_dir={tmp_path / 'res'}"]
    monkeypatch.setenv("CIFAR10_DIR", str(d / "data_batch_1.bin"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("data error: ") and "(CIFAR10_DIR) is a file, not a folder" in err
    monkeypatch.setenv("CIFAR10_DIR", str(d))
    (d / "data_batch_3.bin").unlink()
    (d / "data_batch_3.bin").mkdir()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data_batch_3.bin is a folder, not a file" in err, err
