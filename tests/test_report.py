"""A recorded run's report: the files exist, are real PNGs, and the confusion matrix agrees with the row."""
import csv
import os
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.core.variants import build_config
from bench.records.report import mosaic, plot_curves, report_for_run, write_report
from bench.run import train
from pipeline import CIFAR10
from pipeline.cifar10 import FILE_BYTES, TEST_FILES, TRAIN_FILES, data_fingerprint

FILES = ["curves.png", "confusion.png", "misclassified.png", "samples.png"]


def png_size(path):
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_report_written_at_the_end_of_a_run_and_rebuilt_on_demand(tmp_path, cifar, cifar_dir, capsys):
    cfg = build_config("seed", "fast", "full", {"train_subset": "256", "test_subset": "300", "batch_size": "64",
                                                "epochs": "1", "results_dir": str(tmp_path),
                                                "data_dir": str(cifar_dir)}, "cpu")
    r = train(cfg, cifar, quiet=True)
    run_dir = tmp_path / "runs" / r.run_id
    for name in FILES:
        w, h = png_size(run_dir / name)
        assert w >= 300 and h >= 300, (name, w, h)
    with open(run_dir / "confusion.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["true"] for row in rows][:2] == ["airplane", "automobile"]
    cm = [[int(row[c]) for c in list(rows[0])[1:]] for row in rows]
    assert sum(map(sum, cm)) == 300  # the test set used
    assert sum(cm[i][i] for i in range(10)) / 300 == pytest.approx(r.final_test_acc, abs=1e-9)
    assert [sum(row) for row in cm] == [int(cifar.test_labels[:300].eq(c).sum()) for c in range(10)]

    for name in FILES:
        (run_dir / name).unlink()
    summary = report_for_run(r.run_id, str(tmp_path))
    assert summary["total"] == 300 and summary["accuracy"] == pytest.approx(r.final_test_acc)
    assert summary["wrong"] == round(300 * (1 - r.final_test_acc))
    assert all((run_dir / name).is_file() for name in FILES)
    assert f"{summary['wrong']} of 300 test images wrong" in capsys.readouterr().out


RUN_ID = "20260101-000000-abcdef"


def fake_cifar_dir(root: Path, seed: int) -> Path:
    """A cifar-10-batches-bin folder that passes every check: six full-size sparse files of all-zero records, the
    first label byte `seed` % 10, so each seed has its own fingerprint and the folder costs no disk."""
    d = root / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    for name in TRAIN_FILES + TEST_FILES:
        with open(d / name, "wb") as f:
            f.write(bytes([seed % 10]))
            f.truncate(FILE_BYTES)
    return d


def write_runs(res: Path, cfg_overrides: dict | None = None, **cells) -> None:
    """runs.csv with another run's row, then RUN_ID's: its config (test_subset 300 plus `cfg_overrides`) and `cells`."""
    cfg = build_config("seed", "fast", "full", {"test_subset": "300", **(cfg_overrides or {})}, "cpu")
    rows = [{"run_id": "other", "config_json": "{}"}, {"run_id": RUN_ID, "config_json": cfg.to_json(), **cells}]
    with open(res / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["run_id", "config_json", *cells])
        w.writeheader()
        w.writerows(rows)


@pytest.fixture
def evidence(tmp_path, monkeypatch):
    """A recorded run's evidence as train() leaves it (runs.csv row, epochs.csv, 300 test predictions), written by
    hand, with a data folder in CIFAR10_DIR (the row has no fingerprint, as rows before fingerprints); loading the
    data set stands for the report's first real work and is refused, naming the folder, so a test sees how far the
    checks let a command get and where they looked, without training or reading 180 MB. The user's MD5 cache, the
    download cache and the shared copy are out of reach; a download is refused."""
    res = tmp_path / "res"
    run_dir = res / "runs" / RUN_ID
    run_dir.mkdir(parents=True)
    write_runs(res)
    (run_dir / "epochs.csv").write_text("epoch,lr,train_loss,train_acc,test_loss,test_acc\n1,0.1,2.0,0.3,1.9,0.35\n")
    np.save(run_dir / "test_predictions.npy", np.arange(300) % 10)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CIFAR10_DIR", str(fake_cifar_dir(tmp_path / "env", 1)))
    monkeypatch.setattr("bench.records.report.SHARED_DATA", tmp_path / "no-shared-copy", raising=False)

    def no_data(data_dir=None, *a, **k):
        raise AssertionError(f"DATA LOADED from {data_dir}")
    monkeypatch.setattr("bench.records.report.load_cifar10", no_data)

    def no_download(*a, **k):
        raise AssertionError("DOWNLOAD STARTED")
    monkeypatch.setattr("pipeline.cifar10.download", no_download)
    return res


def tree(root):
    return {p: p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def refused_report(capsys, res, *needles, run_id=RUN_ID):
    before = tree(res) if res.exists() else None
    rc = main(["report", run_id, f"--results-dir={res}"])
    out, err = capsys.readouterr()
    assert rc == 2, (rc, out, err)
    assert err.count("\n") == 1 and err.startswith("results error: ") and "Traceback" not in err, err
    assert out == "", out
    for needle in needles:
        assert needle in err, err
    assert (tree(res) if res.exists() else None) == before, "the refusal changed the results folder"
    return err


def test_the_forged_evidence_passes_every_check(evidence):
    """The control for the refusals below: the same evidence gets as far as loading the data set."""
    with pytest.raises(AssertionError, match="DATA LOADED"):
        main(["report", RUN_ID, f"--results-dir={evidence}"])


def test_unknown_run_is_one_line_exit_2(capsys, evidence):
    refused_report(capsys, evidence, "run 'nope' is not in", "run_id column", run_id="nope")


def test_missing_or_file_results_folder_is_one_line(capsys, evidence, tmp_path):
    refused_report(capsys, tmp_path / "nowhere", "nowhere does not exist", "--results-dir=")
    (tmp_path / "file").write_text("x")
    refused_report(capsys, tmp_path / "file", "is a file, not a folder", "--results-dir=")
    (tmp_path / "empty").mkdir()
    refused_report(capsys, tmp_path / "empty", "runs.csv does not exist", "--results-dir=")


def test_missing_run_folder_is_one_line(capsys, evidence):
    import shutil
    shutil.rmtree(evidence / "runs" / RUN_ID)
    refused_report(capsys, evidence, f"runs/{RUN_ID} does not exist", "rerun the run")


@pytest.mark.parametrize("epochs, needles", [
    ("", ("epochs.csv is empty", "rerun the run")),
    ("epoch,lr,train_loss\n1,0.1,2.0\n", ("lacks the columns train_acc, test_loss, test_acc",)),
    ("epoch,lr,train_loss,train_acc,test_loss,test_acc\n1,0.1,two,0.3,1.9,0.35\n", ("column train_loss", "non-numeric")),
    (None, ("epochs.csv is missing", "rerun the run")),
])
def test_a_bad_epoch_log_is_one_line(capsys, evidence, epochs, needles):
    path = evidence / "runs" / RUN_ID / "epochs.csv"
    if epochs is None:
        path.unlink()
    else:
        path.write_text(epochs)
    refused_report(capsys, evidence, *needles)


def test_an_epoch_log_of_only_a_header_is_accepted(evidence):
    """A run that diverged in epoch 1 logs only the header: that is evidence, not a defect."""
    (evidence / "runs" / RUN_ID / "epochs.csv").write_text("epoch,lr,train_loss,train_acc,test_loss,test_acc\n")
    with pytest.raises(AssertionError, match="DATA LOADED"):
        main(["report", RUN_ID, f"--results-dir={evidence}"])


@pytest.mark.parametrize("config_json, needles", [
    ("{not json", ("config_json is not JSON", "rerun the run")),
    ("", ("has no config_json", "rerun the run")),
    ("[1, 2]", ("config_json is list, not a JSON object",)),
    ('{"train": {"epochs": 1, "warp_speed": 9}}', ("unknown key train.warp_speed", "git_commit column")),
    ('{"turbo": {"x": 1}}', ("unknown key 'turbo'",)),
    ('{"turbo": 1}', ("unknown key 'turbo'",)),
    ('{"train": 5}', ("config_json's train is int, not an object",)),
    ('{"train": {"epochs": "four"}}', ("wrong type",)),
    ('{"train": {"epochs": 0}}', ("invalid value", "train.epochs=0")),
])
def test_a_bad_config_json_is_one_line(capsys, evidence, config_json, needles):
    runs = evidence / "runs.csv"
    with open(runs, "w", newline="") as f:
        w = csv.DictWriter(f, ["run_id", "config_json"])
        w.writeheader()
        w.writerow({"run_id": RUN_ID, "config_json": config_json})
    refused_report(capsys, evidence, f"run {RUN_ID} in {runs}", *needles)


PLACES = ("data_dir", "CIFAR10_DIR", "cache", "shared")  # where the report looks, in order


@pytest.mark.parametrize("where", PLACES)
def test_the_report_reads_the_data_whose_fingerprint_the_row_records(evidence, tmp_path, monkeypatch, where):
    """Every place holds a data set; only the one at `where` has the row's fingerprint, and only it is read."""
    other, wanted = fake_cifar_dir(tmp_path / "other", 3), fake_cifar_dir(tmp_path / "wanted", 4)
    places = dict(zip(PLACES, (tmp_path / "row", tmp_path / "env2", tmp_path / "cache" / "cifar10-speedrun",
                               tmp_path / "shared")))
    for name, parent in places.items():
        parent.mkdir(parents=True, exist_ok=True)
        (parent / "cifar-10-batches-bin").symlink_to(wanted if name == where else other)
    folders = {name: parent / "cifar-10-batches-bin" for name, parent in places.items()}
    write_runs(evidence, {"data_dir": str(folders["data_dir"])}, data_fingerprint=data_fingerprint(wanted))
    monkeypatch.setenv("CIFAR10_DIR", str(folders["CIFAR10_DIR"]))
    monkeypatch.setattr("bench.records.report.SHARED_DATA", folders["shared"])
    with pytest.raises(AssertionError, match=f"DATA LOADED from {folders[where]}$"):
        main(["report", RUN_ID, f"--results-dir={evidence}"])


def test_no_folder_with_the_rows_fingerprint_is_one_line_naming_it(capsys, evidence, tmp_path):
    """The data the run read is nowhere in reach: refused, never downloaded, never another data set."""
    write_runs(evidence, {"data_dir": str(tmp_path / "gone")}, data_fingerprint="md5:0123456789ab")
    err = refused_report(capsys, evidence, "md5:0123456789ab", "set CIFAR10_DIR=<folder with cifar-10-batches-bin>",
                         str(tmp_path / "gone"), os.environ["CIFAR10_DIR"])
    assert data_fingerprint(Path(os.environ["CIFAR10_DIR"])) in err  # what the folder in reach holds instead


def test_a_row_without_a_fingerprint_reads_the_first_data_set_found_and_says_so(capsys, evidence, tmp_path):
    """A row from before fingerprints: the row's folder is gone, so the next place holding the files is read, with
    one line saying it could not be checksum-matched."""
    write_runs(evidence, {"data_dir": str(tmp_path / "gone")})
    with pytest.raises(AssertionError, match=f"DATA LOADED from {os.environ['CIFAR10_DIR']}$"):
        main(["report", RUN_ID, f"--results-dir={evidence}"])
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "could not be checksum-matched" in out and os.environ["CIFAR10_DIR"] in out, out


def test_a_row_without_a_fingerprint_and_no_data_in_reach_is_one_line(capsys, evidence, monkeypatch):
    monkeypatch.delenv("CIFAR10_DIR")
    refused_report(capsys, evidence, "no data_fingerprint", "set CIFAR10_DIR=<folder with cifar-10-batches-bin>")


@pytest.mark.parametrize("content, needles", [
    (b"", ("test_predictions.npy is not a readable .npy array", "rerun the run")),
    (np.arange(299) % 10, ("has 299 predictions, the run's config tests 300 images",)),
    (np.arange(301) % 10, ("has 301 predictions",)),
    (np.zeros((300, 10)), ("not one integer class per test image",)),
    (np.full(300, 10), ("classes outside 0-9",)),
    (b"not an npy file at all", ("not a readable .npy array",)),
    (None, ("test_predictions.npy is missing",)),
])
def test_bad_test_predictions_are_one_line(capsys, evidence, content, needles):
    path = evidence / "runs" / RUN_ID / "test_predictions.npy"
    if content is None:
        path.unlink()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content)
    refused_report(capsys, evidence, *needles)


def test_curve_legends_say_what_each_curve_measures():
    from bench.records.report import curve_labels
    assert curve_labels(build_config("seed")) == ("train", "test")
    train, test = curve_labels(build_config("fast4"))
    assert train == "train (label smoothing 0.2)"  # the optimised loss, not comparable with the test loss
    assert test == "test (EMA 0.99, flip TTA)"
    assert curve_labels(build_config("fast5"))[1] == "test (EMA 0.99, flip_translate TTA)"


def test_curves_show_the_cheaper_tta_scores_when_logged(tmp_path):
    epochs = pd.DataFrame({"epoch": [1, 2], "train_loss": [2.0, 1.0], "test_loss": [None, 0.9],
                           "train_acc": [0.3, 0.6], "test_acc": [None, 0.7], "train_time_s": [1.5, 3.0],
                           "test_acc_tta_flip": [None, 0.68], "test_acc_tta_none": [None, 0.66]})
    shown = [[ln.get_label() for ln in plot_curves(epochs, tmp_path / "a.png", "t").axes[i].lines] for i in (1, 2)]
    assert shown == [["train", "test", "test, TTA flip", "test, TTA none"]] * 2  # per epoch and per second
    no_tta = plot_curves(epochs.drop(columns=["test_acc_tta_flip", "test_acc_tta_none"]), tmp_path / "b.png", "t")
    assert [ln.get_label() for ln in no_tta.axes[1].lines] == ["train", "test"]
    assert png_size(tmp_path / "a.png")[0] >= 300


def xticks_shown(ax):
    lo, hi = ax.get_xlim()
    return [t for t in ax.get_xticks() if lo <= t <= hi]


@pytest.mark.parametrize("n", [1, 3, 40])
def test_curves_have_whole_epoch_ticks_and_accuracy_per_training_second(tmp_path, n):
    """A 1-epoch run once got epoch ticks 0.96 ... 1.04; the accuracy is also drawn against the epoch log's
    cumulative train_time_s, from zero, so runs of different speeds compare by time as well as by epoch."""
    times = [1.25 * (e + 1) for e in range(n)]
    epochs = pd.DataFrame({"epoch": range(1, n + 1), "train_loss": [2.0] * n, "test_loss": [1.9] * n,
                           "train_acc": [0.3] * n, "test_acc": [0.35] * n, "train_time_s": times})
    loss, acc, timed = plot_curves(epochs, tmp_path / "c.png", "t").axes
    for ax in (loss, acc):
        shown = xticks_shown(ax)
        assert shown and all(t == int(t) for t in shown) and (n > 1 or shown == [1]), (n, shown)
        assert ax.get_xlim()[0] <= 1 - 0.25 and ax.get_xlim()[1] >= n + 0.25  # every point clear of the edges
    assert timed.get_xlabel().startswith("training time (s") and timed.get_title() == "accuracy per training second"
    assert [list(ln.get_xdata()) for ln in timed.lines] == [times, times]
    assert timed.get_xlim()[0] == 0 and timed.get_xlim()[1] > times[-1]


def test_an_epoch_log_without_training_times_still_draws_and_says_so(tmp_path):
    """Logs from before train_time_s was logged: the time panel says what is missing instead of failing."""
    epochs = pd.DataFrame({"epoch": [1], "train_loss": [2.0], "test_loss": [1.9], "train_acc": [0.3], "test_acc": [0.35]})
    timed = plot_curves(epochs, tmp_path / "c.png", "t").axes[2]
    assert not timed.lines and "no train_time_s" in " ".join(t.get_text() for t in timed.texts)


def tiny_data(n_test: int = 300) -> CIFAR10:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64 + n_test, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.arange(64 + n_test) % 10
    return CIFAR10(images[:64], labels[:64], images[64:], labels[64:])


@pytest.fixture
def titles(monkeypatch):
    """{figure file: its suptitle and axes titles}, for every figure the report saves (nothing is written)."""
    saved = {}
    monkeypatch.setattr("bench.records.report._save", lambda fig, path: saved.__setitem__(
        Path(path).name, " | ".join([fig.get_suptitle()] + [ax.get_title() for ax in fig.axes])))
    return saved


def test_a_run_report_is_titled_with_the_label_it_is_given(tmp_path, titles):
    """At the end of a run the caller passes the row's label: every figure names it, not the config's variant."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "epochs.csv").write_text("epoch,train_loss,train_acc,test_loss,test_acc,train_time_s\n"
                                        "1,2.0,0.3,1.9,0.35,1.5\n")
    cfg = build_config("seed", "fast", "full", {"test_subset": "300"}, "cpu")
    write_report(run_dir, cfg, tiny_data(), np.arange(300) % 10, label="fast+triton")
    assert sorted(titles) == sorted(FILES)
    for name, text in titles.items():
        assert "seed / fast+triton / full (seed 0)" in text, (name, text)
    titles.clear()
    write_report(run_dir, cfg, tiny_data(), np.arange(300) % 10)  # a caller that passes no label: the variant
    assert all("seed / fast / full (seed 0)" in text for text in titles.values()), titles


@pytest.mark.parametrize("cells, shown", [
    ({"variant": "fast", "label": "fast+triton"}, "seed / fast+triton / full"),
    ({"variant": "eager", "label": ""}, "seed / eager / full"),  # an unlabelled row: its variant column
    ({"variant": "eager"}, "seed / eager / full"),  # a row from before the label column
])
def test_a_rebuilt_report_is_titled_with_the_rows_label(evidence, monkeypatch, titles, cells, shown):
    """The config in the row says variant fast; the title says what the row says."""
    write_runs(evidence, **cells)
    monkeypatch.setattr("bench.records.report.load_cifar10", lambda *a, **k: tiny_data(10_000))
    report_for_run(RUN_ID, str(evidence))
    assert all(shown in text for text in titles.values()) and len(titles) == len(FILES), titles


def test_mosaic_puts_each_tile_in_its_cell_on_white():
    """The samples and misclassified grids are one image: tile k at row k // cols, column k % cols, `gap` pixels
    apart, `top` more above each row for captions; a None is a blank cell; values clipped to 0-255."""
    dark, grey = np.zeros((3, 2, 2)), np.full((3, 2, 2), 100.0)
    m = mosaic([dark, None, grey, np.full((3, 2, 2), 300.0)], cols=2, gap=1, top=1)
    assert m.shape == (2 * (2 + 1 + 1) + 1, 2 * (2 + 1) + 1, 3) and m.dtype == np.uint8
    assert (m[2:4, 1:3] == 0).all() and (m[6:8, 1:3] == 100).all() and (m[6:8, 4:6] == 255).all()
    assert (m != 255).sum() == 2 * 2 * 3 * 2  # the dark and grey tiles only: blank, gaps and caption rows white


def test_a_report_killed_while_saving_a_figure_leaves_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "curves.png"
    path.write_bytes(b"the previous figure")

    def killed(src, dst):
        raise KeyboardInterrupt  # the rename that would publish the new figure never happens
    monkeypatch.setattr("bench.records.results.os.replace", killed)
    epochs = pd.DataFrame({"epoch": [1], "train_loss": [2.0], "test_loss": [1.9], "train_acc": [0.3], "test_acc": [0.35]})
    with pytest.raises(KeyboardInterrupt):
        plot_curves(epochs, path, "t")
    assert path.read_bytes() == b"the previous figure"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # no temporary file either
