"""`bench run` (bench/run.py's `train`) end to end on real data: rows, epoch logs, stopping, divergence, learning;
the CLI's `run`, its note on a CPU without native bf16, and `--runs=N` with its statistics."""
import csv
import json

import pytest
import torch

from bench.cli import main
from bench.core.variants import build_config
from bench.records.results import RUN_COLUMNS
from bench.run import train
from tests.test_labels import stand_in_machine


def tiny(tmp_path, **over):
    """4 steps per epoch, each of 32 images (the network's cost on the CPU is per image, seconds per hundred on
    one core)."""
    base = {"train_subset": "128", "test_subset": "128", "batch_size": "32", "epochs": "2",
            "results_dir": str(tmp_path)}
    base.update({k: str(v) for k, v in over.items()})
    return build_config("seed", "fast", "full", base, "cpu")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_row_and_epoch_log_agree(tmp_path, cifar):
    cfg = tiny(tmp_path, stop_at_target="false")
    r = train(cfg, cifar, quiet=True)
    rows = read_csv(tmp_path / "runs.csv")
    assert len(rows) == 1 and list(rows[0]) == list(RUN_COLUMNS)
    row = rows[0]
    assert row["run_id"] == r.run_id and row["status"] in ("reached", "not_reached")
    assert json.loads(row["config_json"])["train"]["batch_size"] == 32
    assert row["torch_version"] == torch.__version__ and row["device_type"] == "cpu"
    epochs = read_csv(tmp_path / "runs" / r.run_id / "epochs.csv")
    assert [int(e["epoch"]) for e in epochs] == [1, 2] == [e["epoch"] for e in r.epochs]
    # the row's totals are the sums of the per-epoch evidence
    assert float(row["train_time_s"]) == pytest.approx(sum(float(e["epoch_time_s"]) for e in epochs), rel=1e-4)
    assert float(row["eval_time_s"]) == pytest.approx(sum(float(e["eval_time_s"]) for e in epochs), rel=1e-4)
    assert float(row["best_test_acc"]) == pytest.approx(max(float(e["test_acc"]) for e in epochs), abs=1e-6)
    assert float(row["images_per_s"]) == pytest.approx(2 * 128 / r.train_time_s, rel=1e-3)
    assert r.wall_time_s > r.train_time_s + r.eval_time_s


def test_stops_at_the_first_epoch_reaching_target(tmp_path, cifar):
    r = train(tiny(tmp_path, target_acc=0.01, epochs=3), cifar, quiet=True)
    assert r.status == "reached" and r.target_epoch == 1 and r.epochs_run == 1
    assert r.time_to_target_s == r.epochs[0]["train_time_s"] > 0
    row = read_csv(tmp_path / "runs.csv")[0]
    assert float(row["time_to_target_s"]) == pytest.approx(r.time_to_target_s, rel=1e-5)


def test_never_reached_has_no_time_to_target(tmp_path, cifar):
    r = train(tiny(tmp_path, epochs=1, target_acc=1.0), cifar, quiet=True)
    assert r.status == "not_reached" and r.time_to_target_s is None
    assert read_csv(tmp_path / "runs.csv")[0]["time_to_target_s"] == ""


def test_divergence_stops_at_once(tmp_path, cifar):
    cfg = tiny(tmp_path, optimizer="sgd", lr_max=1e9, lr_div=1, precision="fp32", epochs=3, target_acc=0.01)
    r = train(cfg, cifar, quiet=True)
    assert r.status == "diverged" and r.time_to_target_s is None and r.target_epoch is None
    epoch, step = r.diverged_at
    assert epoch == 1 and 1 <= step <= 4
    row = read_csv(tmp_path / "runs.csv")[0]
    assert (row["status"], row["diverged_epoch"], row["diverged_step"]) == ("diverged", "1", str(step))


def test_warmup_restores_the_weights(tmp_path, cifar):
    """Warm-up steps are untimed and leave no trace: the same seed gives the same first epoch."""
    a = train(tiny(tmp_path, epochs=1, stop_at_target="false"), cifar, quiet=True, write=False)
    b = train(tiny(tmp_path, epochs=1, stop_at_target="false", warmup_steps=2), cifar, quiet=True, write=False)
    assert b.warmup_s > 0 and a.warmup_s == 0
    assert b.epochs[0]["train_loss"] == pytest.approx(a.epochs[0]["train_loss"], rel=1e-3)
    assert b.epochs[0]["test_acc"] == pytest.approx(a.epochs[0]["test_acc"], abs=0.01)


def test_cli_run_writes_where_it_says(tmp_path, cifar_dir, capsys):
    rc = main(["run", "--variant=fast", "--profile=full", f"--data_dir={cifar_dir}", "--train_subset=128",
               "--test_subset=128", "--batch_size=32", "--epochs=1", f"--results_dir={tmp_path}"])
    out = capsys.readouterr().out
    assert rc == 0 and f"row appended to {tmp_path}/runs.csv" in out
    assert "did not reach 90.0%" in out or "reached 90.0%" in out
    assert len(read_csv(tmp_path / "runs.csv")) == 1


def test_a_full_disk_at_the_row_keeps_the_result_and_runs_csv(tmp_path, cifar_dir, capsys, monkeypatch):
    """The disk fills while the run trains: the row cannot be appended. One line, the result still printed,
    runs.csv as it was, the row kept beside the run."""
    import errno
    from bench.records import results
    (tmp_path / "runs.csv").write_text(",".join(RUN_COLUMNS) + "\n")
    before = (tmp_path / "runs.csv").read_bytes()
    real = results.atomic_write

    def full(path, text):
        if path.name == "runs.csv":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, text)
    monkeypatch.setattr(results, "atomic_write", full)
    rc = main(["run", "--variant=fast", "--profile=full", f"--data_dir={cifar_dir}", "--train_subset=128",
               "--test_subset=128", "--batch_size=32", "--epochs=1", f"--results_dir={tmp_path}"])
    out, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1 and "No space left on device" in err and "Traceback" not in err, err
    assert "reach 90.0%" in out  # the summary line: the result is not lost
    assert (tmp_path / "runs.csv").read_bytes() == before
    kept = list((tmp_path / "runs").glob("*/UNRECORDED-row.csv"))
    assert len(kept) == 1 and str(kept[0]) in err
    row = read_csv(kept[0])[0]
    assert row["status"] in ("reached", "not_reached") and (tmp_path / "runs" / row["run_id"]) == kept[0].parent


@pytest.mark.slow
def test_real_data_learns_far_above_chance(tmp_path, cifar):
    """About 45 s on 2 CPU cores: 8,192 training images, one epoch, batch 128, bf16 channels-last."""
    cfg = build_config("seed", "fast", "full", {"train_subset": "8192", "test_subset": "2000", "batch_size": "128",
                                                "epochs": "1", "results_dir": str(tmp_path)}, "cpu")
    r = train(cfg, cifar, quiet=True)
    assert r.final_test_acc >= 0.35, f"test accuracy {r.final_test_acc:.3f} after one short epoch (chance is 0.10)"


@pytest.mark.slow
def test_fast_learns_like_eager(tmp_path, cifar):
    """Same seed, same short budget (3,072 images, one epoch, batch 128): `fast` (device pipeline, bf16,
    channels-last) and `eager` (DataLoader, fp32, NCHW) end within 5 points of test accuracy (measured:
    29.7% and 29.9% on 1,000 test images); both far above chance."""
    accs = {}
    for variant in ("eager", "fast"):
        cfg = build_config("seed", variant, "full", {"train_subset": "3072", "test_subset": "1000", "batch_size": "128",
                                                     "epochs": "1", "workers": "0", "results_dir": str(tmp_path)}, "cpu")
        accs[variant] = train(cfg, cifar, quiet=True, write=False).final_test_acc
    assert min(accs.values()) > 0.2, accs
    assert abs(accs["fast"] - accs["eager"]) <= 0.05, accs


def test_ema_and_tta_run_and_tta_time_counts_toward_the_target(tmp_path, cifar):
    from bench.records import leaderboard
    cfg = tiny(tmp_path, epochs=1, ema_decay=0.9, tta="flip_translate", target_acc=0.01, logit_scale=0.125)
    r = train(cfg, cifar, quiet=True)
    assert r.status == "reached"
    assert r.time_to_target_s == pytest.approx(r.epochs[0]["train_time_s"] + r.epochs[0]["eval_time_s"])
    ok, refused = leaderboard.load(tmp_path)
    assert refused.empty and len(ok) == 1  # the checker knows TTA time is on the clock
    logged = read_csv(tmp_path / "runs" / r.run_id / "epochs.csv")[0]
    assert 0 < float(logged["test_acc_tta_none"]) < 1 and 0 < float(logged["test_acc_tta_flip"]) < 1


def test_eval_from_skips_early_evaluations_and_cannot_stop_before(tmp_path, cifar):
    from bench.records import leaderboard
    from bench.core.config import ConfigError
    r = train(tiny(tmp_path, eval_from=2, target_acc=0.01), cifar, quiet=True)
    logged = read_csv(tmp_path / "runs" / r.run_id / "epochs.csv")
    assert [e["test_acc"] == "" for e in logged] == [True, False] and logged[0]["eval_time_s"] == "0"
    assert r.target_epoch == 2 and r.final_test_acc == r.best_test_acc
    # the log keeps 6 significant digits: off by at most half a unit in the 6th, i.e. 5e-6 relative (1e-6 failed for
    # about a fifth of the accuracies k/256); any real shift of an accuracy over 128 images is 1/128 or more
    assert float(logged[1]["test_acc"]) == pytest.approx(r.final_test_acc, rel=5e-6)
    ok, refused = leaderboard.load(tmp_path)
    assert refused.empty and len(ok) == 1
    with pytest.raises(ConfigError, match="eval_from=0 must be >= 1"):
        tiny(tmp_path, eval_from=0)
    past = train(tiny(tmp_path, eval_from=3, target_acc=0.01), cifar, quiet=True)  # e.g. fast (eval_from 2) at 1 epoch
    logged = read_csv(tmp_path / "runs" / past.run_id / "epochs.csv")
    assert [e["test_acc"] == "" for e in logged] == [True, False] and past.target_epoch == 2


@pytest.mark.long
def test_a_compiled_run_compiles_everything_in_the_warm_up(tmp_path, cifar, capsys):
    """compile=default through the loop: the warm-up line counts the graphs, and nothing is compiled after it
    through 2 epochs with evaluation (a full and a last, smaller batch) and 6-view TTA. Each evaluation shape is
    a static graph: the TTA crops share the full batch's graph (dense views)."""
    torch._dynamo.reset()
    cfg = tiny(tmp_path, epochs=2, stop_at_target="false", compile="default", warmup_steps=1, precision="fp32",
               test_subset=72, eval_batch_size=64, tta="flip_translate", ema_decay=0)
    r = train(cfg, cifar, write=False)
    out = capsys.readouterr().out
    warm = [line for line in out.splitlines() if line.startswith("warm-up: ")]
    assert len(warm) == 1 and out.index(warm[0]) < out.index("epoch  1"), out
    n = int(warm[0].split()[1])
    assert n == 4, warm  # forward+loss and update of the step; evaluation at 64 and at 8 images
    assert r.late_graphs == 0 and "compiled after the warm-up" not in out


def test_run_without_a_variant_on_a_cpu_without_native_bf16_says_so_in_one_line(tmp_path, cifar_dir, monkeypatch,
                                                                              capsys):
    args = ["run", "--preset=fast4", "--dry-run", f"--results_dir={tmp_path}", f"--data_dir={cifar_dir}"]
    stand_in_machine(monkeypatch, False)
    assert main(args) == 0
    out = capsys.readouterr().out
    note = [line for line in out.splitlines() if "--variant=fast" in line]
    assert len(note) == 1 and "no native support" in note[0] and "13x slower" in note[0]
    stand_in_machine(monkeypatch, True)
    assert main(args) == 0
    assert "--variant=fast" not in capsys.readouterr().out


def test_run_with_runs_repeats_the_recipe_over_seeds_and_prints_the_statistics(tmp_path, cifar_dir, capsys):
    rc = main(["run", "--preset=seed", "--variant=eager", "--runs=2", "--profile=full", f"--data_dir={cifar_dir}",
               "--train_subset=64", "--test_subset=64", "--batch_size=32", "--eval_batch_size=64", "--epochs=1",
               "--workers=0", "--target_acc=0.01", f"--results_dir={tmp_path}"])
    assert rc == 0
    with open(tmp_path / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["seed"] for r in rows] == ["0", "1"] and {r["variant"] for r in rows} == {"eager"}
    table = capsys.readouterr().out
    assert "| eager | 2 | 2/2 (34-100%) |" in table and "olympic mean" in table
