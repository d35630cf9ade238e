"""A recorded run's report: the files exist, are real PNGs, and the confusion matrix agrees with the row."""
import csv
import struct

import numpy as np
import pytest

from bench.cli import main
from bench.config import build_config
from bench.report import mosaic, report_for_run
from bench.train import train

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


@pytest.fixture
def evidence(tmp_path, monkeypatch):
    """A recorded run's evidence as train() leaves it (runs.csv row, epochs.csv, 300 test predictions), written by
    hand; loading the data set stands for the report's first real work and is refused, so a test sees how far the
    checks let a command get without training or reading 180 MB."""
    res = tmp_path / "res"
    run_dir = res / "runs" / RUN_ID
    run_dir.mkdir(parents=True)
    cfg = build_config("seed", "fast", "full", {"test_subset": "300"}, "cpu")
    rows = [{"run_id": "other", "config_json": "{}"}, {"run_id": RUN_ID, "config_json": cfg.to_json()}]
    with open(res / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["run_id", "config_json"])
        w.writeheader()
        w.writerows(rows)
    (run_dir / "epochs.csv").write_text("epoch,lr,train_loss,train_acc,test_loss,test_acc\n1,0.1,2.0,0.3,1.9,0.35\n")
    np.save(run_dir / "test_predictions.npy", np.arange(300) % 10)

    def no_data(*a, **k):
        raise AssertionError("DATA LOADED")
    monkeypatch.setattr("bench.report.load_cifar10", no_data)
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
    from bench.report import curve_labels
    assert curve_labels(build_config("seed")) == ("train", "test")
    train, test = curve_labels(build_config("fast"))
    assert train == "train (label smoothing 0.2)"  # the optimised loss, not comparable with the test loss
    assert test == "test (EMA 0.99, flip TTA)"
    assert curve_labels(build_config("fast5"))[1] == "test (EMA 0.99, flip_translate TTA)"


def test_curves_show_the_cheaper_tta_scores_when_logged(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    import pandas as pd
    from bench.report import plot_curves
    shown = []
    monkeypatch.setattr(plt, "close", lambda fig: shown.append([ln.get_label() for ln in fig.axes[1].lines]))
    epochs = pd.DataFrame({"epoch": [1, 2], "train_loss": [2.0, 1.0], "test_loss": [None, 0.9],
                           "train_acc": [0.3, 0.6], "test_acc": [None, 0.7],
                           "test_acc_tta_flip": [None, 0.68], "test_acc_tta_none": [None, 0.66]})
    plot_curves(epochs, tmp_path / "a.png", "t")
    plot_curves(epochs.drop(columns=["test_acc_tta_flip", "test_acc_tta_none"]), tmp_path / "b.png", "t")
    assert shown == [["train", "test", "test, TTA flip", "test, TTA none"], ["train", "test"]]
    assert png_size(tmp_path / "a.png")[0] >= 300


def test_mosaic_puts_each_tile_in_its_cell_on_white():
    """The samples and misclassified grids are one image: tile k at row k // cols, column k % cols, `gap` pixels
    apart, `top` more above each row for captions; a None is a blank cell; values clipped to 0-255."""
    dark, grey = np.zeros((3, 2, 2)), np.full((3, 2, 2), 100.0)
    m = mosaic([dark, None, grey, np.full((3, 2, 2), 300.0)], cols=2, gap=1, top=1)
    assert m.shape == (2 * (2 + 1 + 1) + 1, 2 * (2 + 1) + 1, 3) and m.dtype == np.uint8
    assert (m[2:4, 1:3] == 0).all() and (m[6:8, 1:3] == 100).all() and (m[6:8, 4:6] == 255).all()
    assert (m != 255).sum() == 2 * 2 * 3 * 2  # the dark and grey tiles only: blank, gaps and caption rows white


def test_a_report_killed_while_saving_a_figure_leaves_the_old_one(tmp_path, monkeypatch):
    import pandas as pd
    from bench.report import plot_curves
    path = tmp_path / "curves.png"
    path.write_bytes(b"the previous figure")

    def killed(src, dst):
        raise KeyboardInterrupt  # the rename that would publish the new figure never happens
    monkeypatch.setattr("bench.results.os.replace", killed)
    epochs = pd.DataFrame({"epoch": [1], "train_loss": [2.0], "test_loss": [1.9], "train_acc": [0.3], "test_acc": [0.35]})
    with pytest.raises(KeyboardInterrupt):
        plot_curves(epochs, path, "t")
    assert path.read_bytes() == b"the previous figure"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # no temporary file either
