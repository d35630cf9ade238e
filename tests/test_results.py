import csv
import multiprocessing as mp

import pytest

from bench import results
from bench.results import RUN_COLUMNS, append_row


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _writer(path, who, n):
    for i in range(n):
        append_row(path, {"run_id": f"{who}-{i}", "config_json": '{"a": "x,y\\n"}'})


def test_concurrent_appends_all_land_untorn(tmp_path):
    path = tmp_path / "runs.csv"
    procs = [mp.get_context("fork").Process(target=_writer, args=(path, w, 25)) for w in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    rows = read(path)
    assert sorted(r["run_id"] for r in rows) == sorted(f"{w}-{i}" for w in "ab" for i in range(25))
    assert all(r["config_json"] == '{"a": "x,y\\n"}' for r in rows)
    assert list(rows[0].keys()) == list(RUN_COLUMNS)


def test_a_failed_write_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "runs.csv"
    append_row(path, {"run_id": "first"})
    before = path.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt  # the run killed while replacing the file
    monkeypatch.setattr(results.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        append_row(path, {"run_id": "second"})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv", "runs.csv.lock"]  # no temp file left


def test_unknown_column_is_refused_and_new_columns_are_added(tmp_path):
    path = tmp_path / "runs.csv"
    with pytest.raises(ValueError, match="bogus"):
        append_row(path, {"bogus": 1})
    append_row(path, {"a": 1}, columns=["a"])
    append_row(path, {"a": 2, "b": 3}, columns=["a", "b"])
    assert read(path) == [{"a": "1", "b": ""}, {"a": "2", "b": "3"}]


def test_written_files_have_ordinary_permissions(tmp_path):
    import os
    append_row(tmp_path / "runs.csv", {"run_id": "x"})
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "runs.csv").stat().st_mode & 0o777 == 0o666 & ~umask


def test_git_commit_marks_code_changes_dirty_but_not_results(tmp_path):
    import shutil
    import subprocess

    from bench.results import git_commit
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    (tmp_path / "results").mkdir()
    (tmp_path / "train.py").write_text("lr = 1\n")
    (tmp_path / "results" / "runs.csv").write_text("run_id\n")
    subprocess.run(git + ["init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(git + ["add", "."], cwd=tmp_path, check=True)
    subprocess.run(git + ["commit", "-qm", "x"], cwd=tmp_path, check=True)
    clean = git_commit(tmp_path)
    assert len(clean) == 12 and not clean.endswith("-dirty")
    (tmp_path / "results" / "runs.csv").write_text("run_id\nr1\n")  # a run appended its row
    assert git_commit(tmp_path) == clean
    (tmp_path / "train.py").write_text("lr = 2\n")  # the code changed
    assert git_commit(tmp_path) == clean + "-dirty"
