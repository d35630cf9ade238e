"""The per-step log (steps.csv) and the hand-written TensorBoard event file, end to end through train() and the CLI."""
import csv
import math
import struct
from pathlib import Path

import pytest

from bench.cli import main
from bench.core.step import one_cycle_lrs
from bench.core.variants import build_config
from bench.records.tensorboard_events import masked_crc32c
from bench.run import train
from tests.conftest import real_data_dir

EPOCH_TAGS = {"test/acc": "test_acc", "train/acc": "train_acc", "train/loss_epoch": "train_loss",
              "time/train_s": "train_time_s"}


def overrides(results_dir, **over):
    """3 steps per epoch of 64 images, 64 test images: the loop's whole path at the least CPU cost."""
    base = {"train_subset": "192", "test_subset": "64", "batch_size": "64", "epochs": "2",
            "stop_at_target": "false", "results_dir": str(results_dir)}
    base.update({k: str(v) for k, v in over.items()})
    return base


def tiny(results_dir, **over):
    return build_config("seed", "fast", "full", overrides(results_dir, **over), "cpu")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --- a reader written from the format's description, independent of the writer's encoding functions

def read_records(path: Path) -> list[bytes]:
    """TFRecord payloads of `path`, each CRC verified."""
    data, out, at = path.read_bytes(), [], 0
    while at < len(data):
        head = data[at:at + 8]
        (n,) = struct.unpack("<Q", head)
        (head_crc,) = struct.unpack("<I", data[at + 8:at + 12])
        assert head_crc == masked_crc32c(head), f"length CRC of the record at byte {at}"
        payload = data[at + 12:at + 12 + n]
        (crc,) = struct.unpack("<I", data[at + 12 + n:at + 16 + n])
        assert len(payload) == n and crc == masked_crc32c(payload), f"data CRC of the record at byte {at}"
        out.append(payload)
        at += 16 + n
    return out


def read_varint(buf: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[at]
        value |= (b & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not b & 0x80:
            return value, at


def read_message(buf: bytes) -> dict[int, list]:
    """field number -> values; length-delimited fields stay bytes, fixed64/fixed32 stay raw 8/4 bytes."""
    fields, at = {}, 0
    while at < len(buf):
        key, at = read_varint(buf, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = read_varint(buf, at)
        elif wire == 1:
            value, at = buf[at:at + 8], at + 8
        elif wire == 2:
            n, at = read_varint(buf, at)
            value, at = buf[at:at + n], at + n
        elif wire == 5:
            value, at = buf[at:at + 4], at + 4
        else:
            raise AssertionError(f"wire type {wire} at byte {at}")
        fields.setdefault(number, []).append(value)
    return fields


def read_events(path: Path) -> tuple[dict, list[tuple[str, int, float]]]:
    """(the first Event's fields, [(tag, step, value)] of every scalar Event after it)."""
    first, *rest = [read_message(r) for r in read_records(path)]
    scalars = []
    for event in rest:
        (summary,) = event[5]
        (value,) = read_message(summary)[1]
        value = read_message(value)
        (wall,) = struct.unpack("<d", event[1][0])
        assert wall > 1.6e9  # seconds since 1970, not 0 or milliseconds
        scalars.append((value[1][0].decode(), event[2][0], struct.unpack("<f", value[2][0])[0]))
    return first, scalars


def by_tag(scalars, tag):
    return [(step, value) for t, step, value in scalars if t == tag]


# --- a run through the CLI, recorded with --tensorboard

@pytest.fixture(scope="module")
def recorded(tmp_path_factory, cifar):
    """`run --tensorboard` on 2 epochs of 3 steps: (config it ran, its row, its folder)."""
    res = tmp_path_factory.mktemp("steplog")
    over = overrides(res)
    args = ["run", "--variant=fast", "--profile=full", f"--data_dir={real_data_dir()}",
            *[f"--{k}={v}" for k, v in over.items()]]
    assert main(args + ["--tensorboard"]) == 0
    (row,) = read_csv(res / "runs.csv")
    cfg = build_config("seed", "fast", "full", {**over, "data_dir": str(real_data_dir())}, "cpu")
    return cfg, row, res / "runs" / row["run_id"]


def test_steps_csv_has_every_step_with_its_lr(recorded):
    cfg, _, run_dir = recorded
    steps = read_csv(run_dir / "steps.csv")
    assert list(steps[0]) == ["epoch", "step", "lr", "loss"]
    assert [(int(s["epoch"]), int(s["step"])) for s in steps] == [(1, 1), (1, 2), (1, 3), (2, 4), (2, 5), (2, 6)]
    lrs = one_cycle_lrs(cfg, 6).tolist()  # the schedule the step indexed (TrainStep.lr_values)
    assert [float(s["lr"]) for s in steps] == pytest.approx(lrs, rel=1e-5)  # written to 6 digits
    assert all(math.isfinite(float(s["loss"])) and float(s["loss"]) > 0 for s in steps)


def test_steps_average_to_the_epoch_log(recorded):
    _, _, run_dir = recorded
    steps, epochs = read_csv(run_dir / "steps.csv"), read_csv(run_dir / "epochs.csv")
    for e in epochs:
        losses = [float(s["loss"]) for s in steps if s["epoch"] == e["epoch"]]
        assert sum(losses) / len(losses) == pytest.approx(float(e["train_loss"]), rel=1e-5), e["epoch"]
    # the first step's LR is the epoch's LR in epochs.csv
    assert [s["lr"] for s in steps if s["step"] in ("1", "4")] == [e["lr"] for e in epochs]


def test_tensorboard_option_is_not_in_the_row(recorded):
    """A recording choice: the row's config and label are those of the same run without it."""
    cfg, row, _ = recorded
    assert row["config_json"] == cfg.to_json() and "tensorboard" not in row["config_json"]
    assert row["label"] == "fast"


def test_event_file_holds_the_curve_and_the_epochs(recorded):
    cfg, _, run_dir = recorded
    (path,) = (run_dir / "tensorboard").iterdir()
    assert path.name.startswith("events.out.tfevents.")
    first, scalars = read_events(path)
    assert first[3] == [b"brain.Event:2"]
    steps, epochs = read_csv(run_dir / "steps.csv"), read_csv(run_dir / "epochs.csv")
    assert {t for t, _, _ in scalars} == {"train/loss", "train/lr", *EPOCH_TAGS}
    assert by_tag(scalars, "train/loss") == [(int(s["step"]), pytest.approx(float(s["loss"]), rel=1e-5))
                                             for s in steps]
    assert by_tag(scalars, "train/lr") == [(int(s["step"]), pytest.approx(float(s["lr"]), rel=1e-5))
                                           for s in steps]
    for tag, column in EPOCH_TAGS.items():  # at each epoch's last step
        assert by_tag(scalars, tag) == [(3 * int(e["epoch"]), pytest.approx(float(e[column]), rel=1e-5))
                                        for e in epochs], tag


def test_tensorboard_reads_the_event_file(recorded):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                      reason="the tensorboard package is not installed here")
    _, _, run_dir = recorded
    acc = accumulator.EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    assert {"train/loss", "train/lr", *EPOCH_TAGS} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in acc.Scalars("test/acc")] == [3, 6]


# --- what is written when a run stops early, or not at all

def test_finished_epochs_stay_logged_when_a_later_one_fails(tmp_path, cifar):
    def fail(epoch):
        if epoch["epoch"] == 2:
            raise RuntimeError("stopped after epoch 2's log")
    with pytest.raises(RuntimeError, match="stopped after"):
        train(tiny(tmp_path, epochs=3, train_subset=128), cifar, quiet=True, on_epoch=fail, tensorboard=True)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert [s["step"] for s in read_csv(run_dir / "steps.csv")] == ["1", "2", "3", "4"]
    (path,) = (run_dir / "tensorboard").iterdir()
    _, scalars = read_events(path)
    assert [step for step, _ in by_tag(scalars, "train/loss")] == [1, 2, 3, 4]
    assert [step for step, _ in by_tag(scalars, "test/acc")] == [2, 4]
    assert not (tmp_path / "runs.csv").exists()


def test_a_diverged_epoch_keeps_its_steps(tmp_path, cifar):
    """epochs.csv has no row for the epoch that diverged; steps.csv shows how it did."""
    cfg = tiny(tmp_path, optimizer="sgd", lr_max=1e9, lr_div=1, precision="fp32", epochs=1)
    r = train(cfg, cifar, quiet=True)
    assert r.status == "diverged"
    steps = read_csv(r.run_dir / "steps.csv")
    assert [s["step"] for s in steps] == ["1", "2", "3"]
    bad = float(steps[r.diverged_at[1] - 1]["loss"])
    assert not math.isfinite(bad) or bad > 100 * float(steps[0]["loss"])
    assert read_csv(r.run_dir / "epochs.csv") == []


def test_no_files_without_write(tmp_path, cifar):
    train(tiny(tmp_path, epochs=1, train_subset=64), cifar, quiet=True, write=False, tensorboard=True)
    assert not (tmp_path / "runs").exists()


def test_dry_run_with_tensorboard(tmp_path, cifar_dir):
    args = ["run", "--variant=fast", "--profile=full", f"--data_dir={cifar_dir}",
            *[f"--{k}={v}" for k, v in overrides(tmp_path).items()]]
    assert main(args + ["--tensorboard", "--dry-run"]) == 0
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_race_passes_tensorboard_to_every_run(monkeypatch, tmp_path, cifar, cifar_dir):
    seen = []
    monkeypatch.setattr("bench.race.load_cifar10", lambda *a, **k: cifar)
    monkeypatch.setattr("bench.race.train", lambda cfg, data, **k: seen.append((cfg.variant, k)))
    monkeypatch.setattr("bench.race.race_table", lambda *a: "")
    args = ["race", "--variants=eager,fast", "--profile=full", f"--data_dir={cifar_dir}",
            *[f"--{k}={v}" for k, v in overrides(tmp_path).items()]]
    assert main(args + ["--tensorboard"]) == 0
    assert seen == [("eager", {"tensorboard": True}), ("fast", {"tensorboard": True})]
    seen.clear()
    assert main(args) == 0
    assert seen == [("eager", {"tensorboard": False}), ("fast", {"tensorboard": False})]
