"""The leaderboard reads only the CSVs, ranks per device, lists misses apart, refuses rows its evidence contradicts."""
import struct

import pandas as pd

from bench.core.machine import device_heading
from bench.core.train import RunResult
from bench.core.variants import axis_settings, build_config
from bench.race import race_table
from bench.records import leaderboard
from bench.records.results import EPOCH_COLUMNS, RUN_COLUMNS, write_csv

TARGET = 0.9


def M(device: str) -> str:
    """The heading of a test row's machine (test rows record no machine facts)."""
    return device_heading(device, "")

ROWS: dict = {}  # rows written so far per results folder


SETTINGS = {"eager": {"pipeline": "dataloader", "precision": "fp32", "channels_last": False, "compile": "off",
                      "norm_kernel": "eager"},
            "fast": {"pipeline": "device", "precision": "bf16", "channels_last": True, "compile": "default",
                     "norm_kernel": "eager"}}  # what each variant gives on CUDA


def add_run(root, run_id, device, variant, accs, epoch_s, tamper=None, write_log=True, preset="seed", target=TARGET):
    """A run with a consistent epoch log; `tamper` edits the row afterwards to contradict it."""
    cum, epochs = 0.0, []
    for i, acc in enumerate(accs, 1):
        cum += epoch_s
        epochs.append({"epoch": i, "lr": 1e-3, "train_loss": 1.0, "train_acc": 0.5, "test_loss": 1.0,
                       "test_acc": acc, "epoch_time_s": epoch_s, "train_time_s": cum, "eval_time_s": 1.0})
    hit = next((e for e in epochs if e["test_acc"] >= target), None)
    row = {"run_id": run_id, "device": device, "device_type": "cuda", "preset": preset, "profile": "full",
           "variant": variant, "train_images": 50000, "test_images": 10000, **SETTINGS.get(variant, SETTINGS["fast"]),
           "status": "reached" if hit else "not_reached", "epochs_run": len(accs), "target_acc": target,
           "target_epoch": hit["epoch"] if hit else None, "time_to_target_s": hit["train_time_s"] if hit else None,
           "train_time_s": cum, "final_test_acc": accs[-1] if accs else None, "best_test_acc": max(accs, default=None),
           "images_per_s": 1000.0, "label": variant}  # the label a run writes for its variant as defined
    row.update(tamper or {})
    if write_log:
        write_csv(root / "runs" / run_id / "epochs.csv", EPOCH_COLUMNS, epochs)
    rows = ROWS.setdefault(root, [])
    rows.append(row)
    write_csv(root / "runs.csv", RUN_COLUMNS, rows)


def test_ranks_per_device_with_speedup_and_refuses_contradictions(tmp_path):
    add_run(tmp_path, "e1", "GPU-A", "eager", [0.5, 0.85, 0.91], 10.0)
    add_run(tmp_path, "e2", "GPU-A", "eager", [0.5, 0.92], 12.0)
    add_run(tmp_path, "f1", "GPU-A", "fast", [0.6, 0.90], 2.0)
    add_run(tmp_path, "f2", "CPU-B", "fast", [0.6, 0.95], 100.0)
    add_run(tmp_path, "miss", "GPU-A", "fast", [0.5, 0.7], 2.0)
    add_run(tmp_path, "bad-epoch", "GPU-A", "fast", [0.5, 0.91, 0.93], 2.0, tamper={"target_epoch": 3,
                                                                                    "time_to_target_s": 6.0})
    add_run(tmp_path, "bad-time", "GPU-A", "fast", [0.91], 2.0, tamper={"time_to_target_s": 1.0})
    add_run(tmp_path, "no-log", "GPU-A", "fast", [0.95], 1.0, write_log=False)
    add_run(tmp_path, "lie", "GPU-A", "fast", [0.5, 0.95], 1.0, tamper={"status": "not_reached",
                                                                         "target_epoch": None, "time_to_target_s": None})
    ok, refused = leaderboard.load(tmp_path)
    reasons = dict(zip(refused["run_id"], refused["reason"]))
    assert set(reasons) == {"bad-epoch", "bad-time", "no-log", "lie"}
    assert "first reaches the target at epoch 2" in reasons["bad-epoch"]
    assert "time_to_target_s" in reasons["bad-time"] and "missing" in reasons["no-log"]
    assert "epoch 2 reaches the target" in reasons["lie"]

    rank = leaderboard.ranking(ok).set_index(["machine", "label"])
    assert rank.loc[(M("GPU-A"), "eager"), ["runs", "tried"]].tolist() == [2, 2]
    assert rank.loc[(M("GPU-A"), "fast"), ["runs", "tried"]].tolist() == [1, 2]  # "miss" counts, refused rows do not
    assert rank.loc[(M("GPU-A"), "eager"), "median_s"] == 27.0  # median of 30 and 24
    assert (rank.loc[(M("GPU-A"), "eager"), "min_epochs"], rank.loc[(M("GPU-A"), "eager"), "max_epochs"]) == (2, 3)
    assert rank.loc[(M("GPU-A"), "fast"), "best_s"] == 4.0
    assert rank.loc[(M("GPU-A"), "fast"), "speedup_vs_eager"] == 27.0 / 4.0
    assert pd.isna(rank.loc[(M("CPU-B"), "fast"), "speedup_vs_eager"])  # no eager on that device: no speedup

    assert leaderboard.main(str(tmp_path)) == 0
    text = (tmp_path / "leaderboard.md").read_text()
    assert text.index("## CPU-B") < text.index("## GPU-A")  # each device its own ranking
    assert "did not reach the target" in text and f"| {M('GPU-A')} | seed | full | fast | not_reached |" in text
    assert "bad-time" in text.split("Refused rows")[1]
    assert "| 27.0 | 2.5 (2-3) |" in text and "| 4.0 | 2 |" in text  # epochs to target: median (range)
    assert "| eager | 2/2 (34-100%) |" in text and "| fast | 1/2 (9-91%) |" in text  # reached / runs, Wilson 95%
    pngs = list((tmp_path / "plots").glob("*.png"))
    assert len(pngs) == 2
    for png in pngs:
        head = png.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", head[16:24])
        assert width >= 600 and height >= 400


def result(status, ttt, acc, train_s, epochs):
    return RunResult(run_id="x", status=status, epochs_run=epochs, target_epoch=epochs if ttt else None,
                     time_to_target_s=ttt, train_time_s=train_s, eval_time_s=1, warmup_s=0, wall_time_s=train_s + 1,
                     data_wait_s=0, final_test_acc=acc, best_test_acc=acc, images_per_s=100)


def test_race_table_speedup_by_target_time_or_per_epoch():
    table = race_table({"eager": [result("reached", 30.0, 0.91, 30.0, 3)],
                        "fast": [result("reached", 10.0, 0.90, 10.0, 3), result("reached", 14.0, 0.91, 14.0, 3)]},
                       TARGET, "GPU-A")
    line = next(l for l in table.splitlines() if l.startswith("| fast"))
    assert "12.0 (10.0-14.0)" in line and "2.50x" in line and "| 2/2 (34-100%) |" in line
    smoke = race_table({"eager": [result("not_reached", None, 0.3, 40.0, 2)],
                        "fast": [result("not_reached", None, 0.3, 10.0, 2)]}, TARGET, "CPU")
    assert "4.00x (per epoch)" in smoke


def test_race_and_leaderboard_give_the_same_speedup_for_the_same_runs(tmp_path):
    """One definition (stats.speedup, the ratio of median times to target): an even number of eager runs makes a
    median of medians, a mean of ratios or a best-of differ from it."""
    for i, s in enumerate([20.0, 40.0]):
        add_run(tmp_path, f"e{i}", "GPU-A", "eager", [0.95], s)
    for i, s in enumerate([4.0, 5.0, 9.0]):
        add_run(tmp_path, f"f{i}", "GPU-A", "fast", [0.95], s)
    ok, _ = leaderboard.load(tmp_path)
    board = leaderboard.ranking(ok).set_index("label").loc["fast", "speedup_vs_eager"]
    race = race_table({"eager": [result("reached", t, 0.95, t, 1) for t in (20.0, 40.0)],
                       "fast": [result("reached", t, 0.95, t, 1) for t in (4.0, 5.0, 9.0)]}, TARGET, "GPU-A")
    assert board == 6.0 and "| 6.00x |" in race  # median 30 over median 5


def test_rows_of_a_renamed_recipe_rank_under_its_name_of_today(tmp_path):
    add_run(tmp_path, "old", "GPU-A", "fast", [0.95], 3.0, preset="fast")  # written before fast became fast4
    add_run(tmp_path, "new", "GPU-A", "fast", [0.95], 5.0, preset="fast4")
    add_run(tmp_path, "stretch", "GPU-A", "fast", [0.95], 4.0, preset="fast(epochs=3)")
    rank = leaderboard.ranking(leaderboard.load(tmp_path)[0]).set_index("preset")
    assert rank.loc["fast4", "runs"] == 2 and rank.loc["fast4", "median_s"] == 4.0  # one event, not two
    assert rank.loc["fast4(epochs=3)", "runs"] == 1 and "fast" not in rank.index


def test_groups_by_what_ran_and_labels_overridden_settings(tmp_path, monkeypatch):
    add_run(tmp_path, "f1", "GPU-A", "fast", [0.6, 0.91], 1.0)
    add_run(tmp_path, "t1", "GPU-A", "fast", [0.6, 0.91], 2.0, tamper={"norm_kernel": "triton",
                                                                             "label": "fast+triton"})
    add_run(tmp_path, "small", "GPU-A", "fast", [0.06], 0.1, target=0.05, tamper={"train_images": 128})
    ok, refused = leaderboard.load(tmp_path)
    assert refused.empty
    rank = leaderboard.ranking(ok)
    assert sorted(rank["label"]) == ["fast", "fast", "fast+triton"]
    main = rank[rank["target_acc"] == TARGET].set_index("label")
    assert main.loc["fast", "median_s"] == 2.0 and main.loc["fast+triton", "median_s"] == 4.0  # not pooled
    assert list(main["rank"]) == [1, 2]
    small = rank[rank["target_acc"] == 0.05]
    assert len(small) == 1 and small["rank"].iloc[0] == 1 and small["runs"].iloc[0] == 1  # its own event

    legends = []
    monkeypatch.setattr("matplotlib.figure.Figure.savefig",
                        lambda fig, *a, **k: legends.append(fig.axes[0].get_legend_handles_labels()[1]))
    leaderboard.plot(ok, tmp_path)
    assert sorted(map(sorted, legends)) == [["fast", "fast+triton", "target"], ["fast", "target"]]
    text = leaderboard.render(ok, refused)
    assert "| 2 | fast+triton | 1/1 (21-100%) |" in text and "target 5%, 128 training" in text


def test_a_changed_recipe_is_its_own_event_with_its_variant_named_plainly(tmp_path):
    add_run(tmp_path, "f1", "GPU-A", "fast", [0.6, 0.91], 1.0)
    add_run(tmp_path, "w1", "GPU-A", "fast", [0.6, 0.91], 0.5, preset="seed(whiten=false)")
    ok, refused = leaderboard.load(tmp_path)
    rank = leaderboard.ranking(ok).set_index("preset")
    assert refused.empty and list(rank["label"]) == ["fast", "fast"] and list(rank["rank"]) == [1, 1]
    assert rank.loc["seed(whiten=false)", "median_s"] == 1.0 and rank.loc["seed", "median_s"] == 2.0  # not pooled


def test_duplicates_count_once_and_unreadable_rows_are_refused_while_the_rest_ranks(tmp_path):
    add_run(tmp_path, "e1", "GPU-A", "eager", [0.5, 0.91], 10.0)
    add_run(tmp_path, "f1", "GPU-A", "fast", [0.6, 0.91], 1.0)
    add_run(tmp_path, "f1", "GPU-A", "fast", [0.6, 0.91], 1.0)  # the same row appended twice
    add_run(tmp_path, "empty", "GPU-A", "fast", [0.6, 0.91], 1.0, tamper={"epochs_run": None})
    with open(tmp_path / "runs.csv", "a") as f:
        f.write("wide,x,x" + "," * (len(RUN_COLUMNS) - 1) + "\n")  # more fields than the header
    ok, refused = leaderboard.load(tmp_path)
    reasons = dict(zip(refused["run_id"], refused["reason"]))
    assert reasons["empty"] == "unreadable row: epochs_run is empty, not a number"
    assert "repeats the run_id of line 3" in reasons["f1"]
    assert reasons["wide"] == f"line 6 has {len(RUN_COLUMNS) + 2} fields, the header has {len(RUN_COLUMNS)}"
    rank = leaderboard.ranking(ok).set_index("label")
    assert rank.loc["fast", "runs"] == 1 and rank.loc["fast", "speedup_vs_eager"] == 10.0


def test_no_runs_csv_or_an_empty_one_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "runs" / "20261128-000000-abcdef").mkdir(parents=True)
    assert leaderboard.main(str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "1 run folders" in err
    (tmp_path / "runs.csv").write_text(",".join(RUN_COLUMNS) + "\n")
    assert leaderboard.main(str(tmp_path)) == 2
    assert "has no rows yet" in capsys.readouterr().err and not (tmp_path / "leaderboard.md").exists()


def test_run_folders_without_a_row_are_listed_apart(tmp_path):
    add_run(tmp_path, "f1", "GPU-A", "fast", [0.6, 0.91], 1.0)
    write_csv(tmp_path / "runs" / "killed" / "epochs.csv", EPOCH_COLUMNS,
              [{"epoch": 1, "lr": 0.1, "train_loss": 1, "train_acc": 0.5, "test_loss": 1, "test_acc": 0.42,
                "epoch_time_s": 1, "train_time_s": 1, "eval_time_s": 0.1}])
    (tmp_path / "runs" / "empty-folder").mkdir()
    assert leaderboard.main(str(tmp_path)) == 0
    apart = (tmp_path / "leaderboard.md").read_text().split("Run folders without a row")[1]
    assert "| runs/killed/ | 1 epochs logged, best test acc 42.00% |" in apart
    assert "| runs/empty-folder/ | no readable epoch log |" in apart and "runs/f1/" not in apart


def test_ladder_shows_img_per_s_and_time_to_target_per_rung(tmp_path):
    for rung, epoch_s in [("eager", 8.0), ("device", 4.0), ("bf16", 2.0), ("channels-last", 1.0)]:
        add_run(tmp_path, rung, "GPU-A", rung, [0.5, 0.91], epoch_s,
                tamper={**axis_settings(build_config("seed", rung, "full", {}, "cuda")),
                        "images_per_s": 1000.0 / epoch_s})
    ok, _ = leaderboard.load(tmp_path)
    lines = leaderboard.ladder_table(ok)
    rows = [l for l in lines if l.startswith("| ") and not l.startswith("| rung")]
    assert [r.split(" | ")[0] for r in rows] == ["| eager", "| device", "| bf16", "| channels-last"]  # ladder order
    assert rows[2] == "| bf16 | 1 | 1/1 | 4.0 | 500 | 2.00x | 4.00x |"


def test_damaged_epoch_logs_are_refused_while_the_rest_ranks(tmp_path):
    add_run(tmp_path, "good", "GPU-A", "fast", [0.5, 0.95], 2.0)
    add_run(tmp_path, "no-col", "GPU-A", "fast", [0.5, 0.95], 2.0)
    add_run(tmp_path, "text", "GPU-A", "fast", [0.5, 0.95], 2.0)
    log = tmp_path / "runs" / "no-col" / "epochs.csv"
    log.write_text(pd.read_csv(log).drop(columns=["epoch_time_s"]).to_csv(index=False))
    log = tmp_path / "runs" / "text" / "epochs.csv"
    log.write_text(log.read_text().replace("0.95", "abc"))
    ok, refused = leaderboard.load(tmp_path)
    reasons = dict(zip(refused["run_id"], refused["reason"]))
    assert list(ok["run_id"]) == ["good"]
    assert "lacks the column epoch_time_s" in reasons["no-col"] and "non-numeric test_acc" in reasons["text"]


def test_an_epoch_one_divergence_with_a_header_only_log_is_listed_as_diverged(tmp_path):
    add_run(tmp_path, "ok", "GPU-A", "fast", [0.5, 0.95], 2.0)
    add_run(tmp_path, "boom", "GPU-A", "fast", [], 2.0, write_log=False,
            tamper={"status": "diverged", "epochs_run": 1, "diverged_epoch": 1, "train_time_s": 0.5,
                    "best_test_acc": None, "final_test_acc": None})
    write_csv(tmp_path / "runs" / "boom" / "epochs.csv", EPOCH_COLUMNS, [])  # what train() writes: a header
    ok, refused = leaderboard.load(tmp_path)
    assert refused.empty, refused.to_dict("records")
    assert set(ok["run_id"]) == {"ok", "boom"}
    assert "diverged" in leaderboard.render(ok, refused)


def test_unreadable_runs_csv_files_are_one_line_and_exit_2(tmp_path, capsys):
    import csv
    cases = {"latin1": ",".join(RUN_COLUMNS).encode() + "\nr\u00e9,x\n".encode("latin-1"),
             "huge": ",".join(RUN_COLUMNS).encode() + b'\n"' + b"x" * (csv.field_size_limit() + 10) + b'"\n'}
    for name, data in cases.items():
        root = tmp_path / name
        root.mkdir()
        (root / "runs.csv").write_bytes(data)
        assert leaderboard.main(str(root)) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and str(root / "runs.csv") in err, err


def test_a_byte_order_mark_keeps_every_row(tmp_path):
    add_run(tmp_path, "a", "GPU-A", "fast", [0.5, 0.95], 2.0)
    path = tmp_path / "runs.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))  # as a spreadsheet saves it
    ok, _ = leaderboard.load(tmp_path)
    assert list(ok["run_id"]) == ["a"]


def test_an_unwritable_folder_prints_the_table_and_one_line(tmp_path, capsys, monkeypatch):
    import errno
    add_run(tmp_path, "a", "GPU-A", "fast", [0.5, 0.95], 2.0)

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(leaderboard, "atomic_write", full)
    assert leaderboard.main(str(tmp_path)) == 2
    out, err = capsys.readouterr()
    assert "# Leaderboard" in out and err.count("\n") == 1 and "No space left on device" in err


def test_figures_are_written_atomically(tmp_path, monkeypatch):
    """A leaderboard killed while it saves a figure leaves the previous figure, never a truncated file."""
    from matplotlib.figure import Figure
    add_run(tmp_path, "a", "GPU-A", "fast", [0.5, 0.95], 2.0)
    assert leaderboard.main(str(tmp_path)) == 0
    (png,) = (tmp_path / "plots").glob("*.png")
    before = png.read_bytes()

    def killed_mid_write(self, target, **kwargs):
        if isinstance(target, (str, bytes)) or hasattr(target, "__fspath__"):
            target = open(target, "wb")
        target.write(before[:10])
        raise KeyboardInterrupt
    monkeypatch.setattr(Figure, "savefig", killed_mid_write)
    try:
        leaderboard.main(str(tmp_path))
    except KeyboardInterrupt:
        pass
    assert png.read_bytes() == before and len(before) > 1000
    assert not list((tmp_path / "plots").glob(".*.tmp"))


def test_ranking_uses_medians_of_odd_and_even_groups_with_outliers(tmp_path):
    """One slow outlier per group: the median ignores it, a mean would not (eager: 3 runs, fast: 4)."""
    for run_id, accs, epoch_s, ips in (("e1", [0.91], 1.0, 100.0), ("e2", [0.5, 0.92], 1.0, 200.0),
                                       ("e3", [0.5] * 9 + [0.99], 10.0, 10_000.0),
                                       ("f1", [0.91], 1.0, 100.0), ("f2", [0.92], 2.0, 200.0),
                                       ("f3", [0.93], 3.0, 300.0), ("f4", [0.5, 0.99], 50.0, 10_000.0)):
        add_run(tmp_path, run_id, "GPU-M", "eager" if run_id[0] == "e" else "fast", accs, epoch_s,
                tamper={"images_per_s": ips})
    ok, refused = leaderboard.load(tmp_path)
    assert refused.empty
    table = {r["label"]: r for r in leaderboard.ranking(ok).to_dict("records")}
    e, f = table["eager"], table["fast"]
    assert (e["runs"], e["median_s"], e["median_epochs"], e["median_final_acc"], e["median_images_per_s"]) == (
        3, 2.0, 2.0, 0.92, 200.0)
    assert (f["runs"], f["median_s"], f["median_epochs"], f["median_final_acc"], f["median_images_per_s"]) == (
        4, 2.5, 1.0, 0.925, 250.0)
    assert f["speedup_vs_eager"] == 2.0 / 2.5 and (e["rank"], f["rank"]) == (1, 2)
    md = leaderboard.render(ok, refused)
    assert "| 2 | fast | 4/4 (51-100%) | 1.0 | 2.5 (1.0-100.0) | 2.5 | 1 (1-2) | 250 | 93.75 ± 5.72 | 0.80x |" in md, md


def test_race_table_uses_medians_of_odd_and_even_groups_with_outliers():
    def run(ttt, acc, epochs, ips, warm):
        return RunResult(run_id="x", status="reached", epochs_run=epochs, target_epoch=epochs, time_to_target_s=ttt,
                         train_time_s=ttt, eval_time_s=1, warmup_s=warm, wall_time_s=ttt + 1, data_wait_s=0,
                         final_test_acc=acc, best_test_acc=acc, images_per_s=ips)
    table = race_table({"eager": [run(1.0, 0.91, 1, 100, 1.0), run(2.0, 0.92, 2, 200, 2.0), run(100.0, 0.99, 10, 1e4, 90.0)],
                        "fast": [run(1.0, 0.91, 1, 100, 1.0), run(2.0, 0.92, 1, 200, 2.0), run(3.0, 0.93, 1, 300, 3.0),
                                 run(100.0, 0.99, 2, 1e4, 90.0)]}, TARGET, "GPU-M")
    lines = {l.split(" | ")[0][2:]: l for l in table.splitlines() if l.startswith("| eager") or l.startswith("| fast")}
    assert lines["eager"] == ("| eager | 3 | 3/3 (44-100%) | 2.0 (1.0-100.0) | 2.0 | 94.00 ± 10.83 | 2.0 (1.0-10.0) | "
                              "200 | 2.0 (1.0-90.0) | 1.00x |")
    assert lines["fast"] == ("| fast | 4 | 4/4 (51-100%) | 2.5 (1.0-100.0) | 2.5 | 93.75 ± 5.72 | 1.0 (1.0-2.0) | 250 | "
                             "2.5 (1.0-90.0) | 0.80x |")


def test_ranking_with_no_reached_run_is_an_empty_table_with_its_columns(tmp_path):
    add_run(tmp_path, "m1", "GPU-N", "fast", [0.5, 0.7], 2.0)
    ok, _ = leaderboard.load(tmp_path)
    table = leaderboard.ranking(ok)
    assert table.empty and list(table.columns)[-3:] == ["acc_ci", "median_images_per_s", "speedup_vs_eager"]


def test_an_epoch_log_that_disagrees_with_its_row_in_any_way_is_refused(tmp_path):
    stops = '{"train": {"stop_at_target": true}}'
    add_run(tmp_path, "ok", "GPU-A", "fast", [0.5, 0.95], 2.0, tamper={"config_json": stops})
    add_run(tmp_path, "more", "GPU-A", "fast", [0.5, 0.95, 0.96], 2.0, tamper={"config_json": stops})
    add_run(tmp_path, "more-ok", "GPU-A", "fast", [0.5, 0.95, 0.96], 2.0,
            tamper={"config_json": '{"train": {"stop_at_target": false}}'})  # trains on past the target: allowed
    add_run(tmp_path, "fewer", "GPU-A", "fast", [0.5, 0.95], 2.0, tamper={"epochs_run": 3})
    add_run(tmp_path, "later", "GPU-A", "fast", [0.91, 0.95], 2.0, tamper={"target_epoch": 2, "time_to_target_s": 4.0})
    add_run(tmp_path, "final", "GPU-A", "fast", [0.5, 0.95], 2.0, tamper={"final_test_acc": 0.97})
    add_run(tmp_path, "miss", "GPU-A", "fast", [0.5, 0.6], 2.0, tamper={"target_epoch": 2, "time_to_target_s": 4.0})
    ok, refused = leaderboard.load(tmp_path)
    reasons = dict(zip(refused["run_id"], refused["reason"]))
    assert sorted(ok["run_id"]) == ["more-ok", "ok"]
    assert "stops at the target, reached at epoch 2" in reasons["more"]
    assert reasons["fewer"] == "epochs_run 3 but the log has 2 epochs"
    assert "first reaches the target at epoch 1" in reasons["later"]
    assert "final_test_acc 0.97" in reasons["final"]
    assert "has a target epoch or a time to target" in reasons["miss"]
