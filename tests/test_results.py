import csv
import multiprocessing as mp

import pytest

from bench.records import results
from bench.records.results import RUN_COLUMNS, append_row


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


def test_a_malformed_old_line_never_costs_the_new_row(tmp_path):
    path = tmp_path / "runs.csv"
    bad = "run_id,status\nr1,reached\nr2,reached,extra field\nr3,not_reached"  # no newline at the end either
    path.write_text(bad)
    append_row(path, {"run_id": "r4", "status": "reached"}, columns=["run_id", "status"])
    assert path.read_text() == bad + "\nr4,reached\n"  # old text kept as it was, the row after it
    append_row(path, {"run_id": "r5", "status": "x", "seed": 1}, columns=["run_id", "status", "seed"])
    lines = path.read_text().splitlines()
    assert lines == ["run_id,status,seed", "r1,reached,", "r2,reached,extra field", "r3,not_reached,",
                     "r4,reached,", "r5,x,1"]  # a new column: well-formed rows widened, the bad one kept


def test_check_csv_names_file_and_line(tmp_path):
    path = tmp_path / "runs.csv"
    results.check_csv(path)  # no file yet: nothing to check
    path.write_text('run_id,config_json\nr1,"{""a"": 1}"\nr2,x,y\n')
    with pytest.raises(results.ResultsError, match=r"runs\.csv line 3: 3 fields where the header has 2"):
        results.check_csv(path)
    path.write_text('run_id,config_json\nr1,"{""a"": 1}"\n\n')
    results.check_csv(path)  # quoted commas and a blank line are fine


def test_stale_temporaries_are_removed_on_the_next_write(tmp_path):
    import os
    import time
    path = tmp_path / "runs.csv"
    stale, fresh, other = (tmp_path / n for n in (".runs.csv.killed.tmp", ".runs.csv.live.tmp", ".epochs.csv.x.tmp"))
    for p in (stale, fresh, other):
        p.write_text("half a row")
    old = time.time() - 2 * results.STALE_TMP_S
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    append_row(path, {"run_id": "r1"})
    assert not stale.exists()  # litter of a killed write
    assert fresh.exists() and other.exists()  # a concurrent writer's file, and another file's, are left alone


def test_results_dir_checks(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(results.ResultsError, match="is a file"):
        results.check_results_dir(tmp_path / "file")
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "runs").write_text("x")
    with pytest.raises(results.ResultsError, match=r"res/runs is a file"):
        results.check_results_dir(tmp_path / "res")
    assert results.check_results_dir(tmp_path / "new" / "deep") == tmp_path / "new" / "deep"
    assert (tmp_path / "new" / "deep" / "runs").is_dir() and not list((tmp_path / "new" / "deep" / "runs").iterdir())


def test_a_runs_csv_that_is_a_link_to_a_shared_file_stays_a_link(tmp_path):
    from bench.records.results import RUN_COLUMNS, append_row
    shared = tmp_path / "shared" / "runs.csv"
    shared.parent.mkdir()
    (tmp_path / "mine").mkdir()
    link = tmp_path / "mine" / "runs.csv"
    link.symlink_to(shared)
    append_row(link, {"run_id": "a"}, RUN_COLUMNS)
    append_row(link, {"run_id": "b"}, RUN_COLUMNS)
    assert link.is_symlink()
    assert [line.split(",")[0] for line in shared.read_text().splitlines()] == ["run_id", "a", "b"]


def test_a_byte_order_mark_is_dropped_and_every_row_kept(tmp_path):
    from bench.records.results import RUN_COLUMNS, append_row
    path = tmp_path / "runs.csv"
    append_row(path, {"run_id": "a"}, RUN_COLUMNS)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    append_row(path, {"run_id": "b"}, RUN_COLUMNS)
    text = path.read_text()
    assert text.startswith("run_id,") and [line.split(",")[0] for line in text.splitlines()] == ["run_id", "a", "b"]


@pytest.mark.parametrize("write", ["append_row", "write_csv"])
def test_the_temporary_file_is_fsynced_whole_before_the_rename(tmp_path, monkeypatch, write):
    """A crash after the rename must not leave a renamed but empty file: fsync(temp) with all its bytes, then replace."""
    import os
    events, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_size))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.fspath(src), os.fspath(dst)))
        real_replace(src, dst)
    monkeypatch.setattr(results.os, "fsync", fsync)
    monkeypatch.setattr(results.os, "replace", replace)
    path = tmp_path / "runs.csv"
    if write == "append_row":
        append_row(path, {"run_id": "first"})
    else:
        results.write_csv(path, ["epoch", "lr"], [{"epoch": 1, "lr": 0.1}])
    (r,) = [i for i, e in enumerate(events) if e[0] == "replace"]
    tmp, dst = events[r][1:]
    assert dst == str(path) and tmp != dst
    assert ("fsync", tmp, path.stat().st_size) in events[:r], events
