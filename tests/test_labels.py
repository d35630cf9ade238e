"""A row reads the same forever and everywhere: its label, settings and machine are written when it runs, and the
leaderboard reads them from the row, never from today's code or machine; rows written before labels are stamped from
their own facts."""
import csv
import json
import subprocess
import sys

import pytest
import torch

from bench.core.variants import build_config
from bench.records import leaderboard
from bench.records.labels import row_label
from bench.records.results import EPOCH_COLUMNS, RUN_COLUMNS, write_csv
from bench.run import train
from tests.conftest import ROOT


def stand_in_machine(monkeypatch, native_bf16: bool) -> None:
    """This process as a CPU with or without native bf16, whichever module asks."""
    monkeypatch.setattr("bench.core.variants.cpu_has_native_bf16", lambda: native_bf16)
    monkeypatch.setattr("bench.core.machine.cpu_has_native_bf16", lambda: native_bf16)
    monkeypatch.setattr("bench.cli.cpu_has_native_bf16", lambda: native_bf16)


def cpu_row(run_id, device, precision, facts, accs=(0.5, 0.92), epoch_s=10.0, label=None, day="2026-12-02"):
    """A CPU `fast` row with a consistent epoch log; `label=None` is a row written before labels were."""
    cum, log = 0.0, []
    for i, acc in enumerate(accs, 1):
        cum += epoch_s
        log.append({"epoch": i, "lr": 0.1, "train_loss": 1.0, "train_acc": 0.5, "test_loss": 1.0, "test_acc": acc,
                    "epoch_time_s": epoch_s, "train_time_s": cum, "eval_time_s": 1.0})
    hit = next((e for e in log if e["test_acc"] >= 0.9), None)
    row = {"run_id": run_id, "timestamp": f"{day}T10:00:00+00:00", "device": device, "device_type": "cpu",
           "device_facts": json.dumps(facts) if facts else "", "preset": "fast", "profile": "full", "variant": "fast",
           "pipeline": "device", "precision": precision, "channels_last": "True", "compile": "off",
           "norm_kernel": "eager", "train_images": 50000, "test_images": 10000, "target_acc": 0.9,
           "status": "reached" if hit else "not_reached", "epochs_run": len(accs),
           "target_epoch": hit["epoch"] if hit else None, "time_to_target_s": hit["train_time_s"] if hit else None,
           "train_time_s": cum, "final_test_acc": accs[-1], "best_test_acc": max(accs), "images_per_s": 40.0,
           "label": label}
    return row, log


def write_results(root, rows_and_logs) -> None:
    for row, log in rows_and_logs:
        write_csv(root / "runs" / row["run_id"] / "epochs.csv", EPOCH_COLUMNS, log)
    write_csv(root / "runs.csv", RUN_COLUMNS, [row for row, _ in rows_and_logs])


def test_the_same_rows_give_byte_identical_tables_on_machines_with_and_without_native_bf16(tmp_path, monkeypatch):
    no_bf16 = {"kind": "cpu", "native_bf16": False, "isa": ["avx2"]}
    write_results(tmp_path, [cpu_row("a", "AMD EPYC (2 threads)", "fp32", no_bf16, label="fast"),
                             cpu_row("b", "Intel Xeon (2 threads)", "bf16", {"kind": "cpu", "native_bf16": True},
                                     label="fast"),
                             cpu_row("old", "Intel Xeon (2 threads)", "fp32", {}, label=None)])
    tables = []
    for native in (True, False):
        stand_in_machine(monkeypatch, native)
        assert leaderboard.main(str(tmp_path)) == 0
        tables.append((tmp_path / "leaderboard.md").read_bytes())
    assert tables[0] == tables[1]
    text = tables[0].decode()
    assert "| 1 | fast | 1/1" in text  # the labels the rows were written with, on either machine
    assert "fast[device,fp32,channels-last,compile=off,norm=eager]" in text  # an unstamped row: every setting


@pytest.mark.parametrize("native", [True, False])
def test_a_run_stamps_its_label_settings_and_machine_as_they_were(tmp_path, cifar, monkeypatch, native):
    stand_in_machine(monkeypatch, native)
    # one step of 16 images: bf16 without native support (the stand-in True on such a CPU) is ~13x slower than fp32
    over = {"train_subset": "16", "test_subset": "16", "batch_size": "16", "epochs": "1", "eval_batch_size": "16",
            "results_dir": str(tmp_path), "channels_last": "false"}  # one setting off the fast variant's
    train(build_config("seed", "fast", "full", over), cifar, quiet=True)
    with open(tmp_path / "runs.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    precision = "bf16" if native else "fp32"
    assert row["precision"] == precision
    assert row["label"] == "fast+nchw"
    assert json.loads(row["variant_settings"]) == {"pipeline": "device", "precision": precision,
                                                   "channels_last": "True", "compile": "off", "norm_kernel": "eager"}
    facts = json.loads(row["device_facts"])
    assert facts["native_bf16"] is native and facts["threads"] == torch.get_num_threads() and "isa" in facts
    monkeypatch.setattr("bench.core.variants.cpu_has_native_bf16", lambda: not native)  # another machine reads it
    assert row_label(row) == "fast+nchw"


def test_stamp_rows_stamps_from_the_rows_own_facts_and_lists_what_it_cannot(tmp_path):
    rows = [cpu_row("probe", "EPYC", "fp32", {}, day="2026-12-02")[0],  # fast chose fp32 after the probe existed
            cpu_row("same-day", "EPYC", "fp32", {}, day="2026-12-02")[0] | {"variant": "eager",
                                                                            "pipeline": "dataloader",
                                                                            "channels_last": "False"},
            cpu_row("unknown", "Other", "fp32", {}, day="2026-11-20")[0]]  # before the probe: no proof
    for r in rows:
        r.update(device_facts="", label="", data_fingerprint="")
    rows[0]["data_fingerprint"] = "md5:1"
    write_csv(tmp_path / "runs.csv", RUN_COLUMNS, rows)
    cmd = [sys.executable, str(ROOT / "scripts" / "stamp_rows.py"), f"--results-dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "probe: stamped\n" in proc.stdout and "unknown: not stamped" in proc.stdout
    with open(tmp_path / "runs.csv", newline="") as f:
        got = {r["run_id"]: r for r in csv.DictReader(f)}
    assert json.loads(got["probe"]["device_facts"])["native_bf16"] is False and got["probe"]["label"] == "fast"
    assert json.loads(got["same-day"]["device_facts"])["native_bf16"] is False and got["same-day"]["label"] == "eager"
    assert got["unknown"]["label"] == "" and got["unknown"]["device_facts"] == ""
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert "unknown: not stamped" in again.stdout and "probe" not in again.stdout  # stamped rows stay as they are
