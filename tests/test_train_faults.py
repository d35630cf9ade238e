"""Faults inside a run: a failing report never costs the row; divergence is judged at the epoch's end and
leaves its evidence (epoch log, row with epoch, step and rule)."""
import csv
import math


from bench.core.train import LOSS_BOUND, first_divergence
from bench.core.variants import build_config
from bench.run import train
from tests.conftest import random_cifar




def tiny(tmp_path, **over):
    base = {"batch_size": "32", "epochs": "2", "device": "cpu", "results_dir": str(tmp_path), "stop_at_target": "false"}
    return build_config("seed", "fast", "full", {**base, **over})


def rows(tmp_path):
    with open(tmp_path / "runs.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_failing_report_leaves_the_row(tmp_path, monkeypatch, capsys):
    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("bench.run.write_report", disk_full)
    r = train(tiny(tmp_path), random_cifar())
    assert [row["run_id"] for row in rows(tmp_path)] == [r.run_id]
    assert (tmp_path / "runs" / r.run_id / "epochs.csv").is_file()
    assert "report not written (OSError" in capsys.readouterr().out


def test_divergence_in_epoch_one_writes_its_epoch_log_and_row(tmp_path):
    r = train(tiny(tmp_path, **{"optim.optimizer": "sgd", "optim.lr_max": "1e6"}), random_cifar())
    assert r.status == "diverged" and r.diverged_at[0] == 1 and r.diverged_at[1] >= 1
    log = tmp_path / "runs" / r.run_id / "epochs.csv"
    assert log.read_text().splitlines()[0].startswith("epoch,")  # the file the summary names exists
    (row,) = rows(tmp_path)
    assert row["status"] == "diverged" and row["diverged_epoch"] == "1" and row["diverged_reason"]


def test_a_finite_loss_far_above_the_start_is_divergence():
    assert first_divergence([2.3, 2.2, 2.0], 2.3) == (None, "")
    step, rule = first_divergence([2.3, 50.0, LOSS_BOUND * 2.3 + 1, 4e13], 2.3)
    assert step == 3 and "above" in rule
    step, rule = first_divergence([2.3, math.nan, 1e9], 2.3)
    assert step == 2 and rule == "non-finite loss"
    assert first_divergence([math.inf], math.inf) == (1, "non-finite loss")
