"""The race's closing lines: the table, and after a smoke race the estimate of the full race here and on a GPU."""
from bench.core.train import RunResult
from bench.core.variants import build_config
from bench.race import full_race_estimate
from tests.test_leaderboard import add_run


def result(images_per_s: float) -> RunResult:
    return RunResult(run_id="x", status="not_reached", epochs_run=1, target_epoch=None, time_to_target_s=None,
                     train_time_s=10.0, eval_time_s=1.0, warmup_s=0.0, wall_time_s=12.0, data_wait_s=0.0,
                     final_test_acc=0.3, best_test_acc=0.3, images_per_s=images_per_s)


def test_estimate_scales_the_measured_img_per_s_to_the_full_schedule_and_names_the_gpu_rows(tmp_path):
    for i, t in enumerate((15.0, 16.0, 20.0)):  # rows with their epoch logs: the estimate quotes checked rows only
        add_run(tmp_path, f"g{i}", "NVIDIA H200", "fast", [0.95], t)
    add_run(tmp_path, "other", "NVIDIA H200", "fast", [0.95], 3.0, preset="fast4")  # another recipe
    add_run(tmp_path, "lie", "NVIDIA H200", "fast", [0.95], 1.0, tamper={"time_to_target_s": 0.5})  # refused
    full = {v: build_config("seed", v, "full", {}, "cpu") for v in ("eager", "fast")}
    line = full_race_estimate({"eager": [result(50.0)], "fast": [result(100.0), result(200.0)]}, full, str(tmp_path))
    # seed: 24 epochs x 50,000 images = 1.2M images; eager at 50 img/s: 6.7 h; fast at the median 150 img/s: 2.2 h
    assert "about 8.9 h" in line and "eager 6.7 h at 50 img/s" in line and "fast 2.2 h at 150 img/s" in line
    assert "fast 16.0 s on NVIDIA H200 (3 runs)" in line and "3.0" not in line


def test_estimate_says_when_no_gpu_row_exists(tmp_path):
    line = full_race_estimate({"fast": [result(40.0)]}, {"fast": build_config("fast4", "fast", "full", {}, "cpu")},
                              str(tmp_path))
    assert line.endswith("on a GPU: no GPU row of this recipe in runs.csv yet") and "fast 1.4 h at 40 img/s" in line
