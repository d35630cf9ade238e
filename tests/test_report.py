"""A recorded run's report: the files exist, are real PNGs, and the confusion matrix agrees with the row."""
import csv
import struct

import numpy as np
import pytest

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


def test_unknown_run_is_a_clear_error(tmp_path):
    (tmp_path / "runs.csv").write_text("run_id,config_json\n")
    with pytest.raises(SystemExit, match="not in"):
        report_for_run("nope", str(tmp_path))


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
