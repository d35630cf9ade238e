"""Where a row's code came from: results imported from another machine, and the recipe a name stood for."""
import csv
import json
import subprocess
import sys
from pathlib import Path

from bench.records import results
from bench.records.results import EPOCH_COLUMNS, RUN_COLUMNS, write_csv

ROOT = Path(__file__).resolve().parent.parent


def test_every_csv_takes_the_one_list_of_environment_columns():
    from bench.tools import choose
    from bench.tools import kernel_bench
    from bench.tools import lr_find
    from bench.tools import pipeline_bench
    for columns in (RUN_COLUMNS, lr_find.LR_FIND_COLUMNS, choose.VARIANT_COLUMNS, kernel_bench.KERNEL_COLUMNS,
                    pipeline_bench.PIPELINE_COLUMNS):
        at = columns.index(results.ENV_COLUMNS[0])
        assert columns[at:at + len(results.ENV_COLUMNS)] == results.ENV_COLUMNS


def test_import_sets_the_commit_renames_the_preset_keeps_orphans_and_is_idempotent(tmp_path):
    src, dest = tmp_path / "gpu", tmp_path / "results"
    cfg = json.dumps({"preset": "fast", "train": {"epochs": 8}})
    write_csv(src / "runs.csv", RUN_COLUMNS, [{"run_id": "r1", "git_commit": "unknown", "preset": "fast",
                                               "config_json": cfg}])
    for run in ("r1", "killed"):
        write_csv(src / "runs" / run / "epochs.csv", EPOCH_COLUMNS, [])
    cmd = [sys.executable, str(ROOT / "scripts" / "import_runs.py"), str(src), "--name=gpu-test",
           f"--results-dir={dest}", "--git-commit=d9ecd36", "--rename-preset=fast=fast8"]
    for _ in range(2):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    with open(dest / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["git_commit"] == "d9ecd36" and rows[0]["preset"] == "fast8"
    assert json.loads(rows[0]["config_json"])["preset"] == "fast8"
    assert (dest / "runs" / "killed" / "epochs.csv").is_file()
    provenance = (dest / "imports" / "gpu-test.md").read_text()
    assert "without .git" in provenance and "`fast` -> `fast8`" in provenance


# keys a row records that are not the recipe's (by hand, not by is_recipe_key: a key that function forgot would
# otherwise drop out of the comparison unseen); everything else a row holds must equal today's preset
NOT_THE_RECIPE = {"preset", "variant", "profile", "results_dir", "data.data_dir", "data.pipeline", "data.train_subset",
                  "data.test_subset", "data.workers", "model.norm_kernel", "optim.lr_source", "train.target_acc",
                  "train.stop_at_target", "train.eval_from", "train.seed", "train.eval_batch_size",
                  "train.warmup_steps", "train.device", "train.precision", "train.channels_last", "train.compile",
                  "train.sync_bn"}


def test_each_recipe_name_still_trains_what_its_rows_trained():
    """A recipe kept "reproducible by name" (fast5, fast8, seed) must still be the recipe of the full-data rows
    recorded under that name: every key a row's config_json holds, but those listed above as not the recipe, equals
    today's preset's value. (Keys added after a row was written are not in it: their default then need not be what
    the code did before.)"""
    from bench.core.recipes import RECIPES
    with open(Path(__file__).parent.parent / "results" / "runs.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["preset"] in RECIPES and r["profile"] == "full"]  # smoke: 2 epochs
    assert {"seed", "fast5", "fast8"} <= {r["preset"] for r in rows}
    for r in rows:
        stored, today = json.loads(r["config_json"]), RECIPES[r["preset"]]().to_dict()
        compared = [(section, key) for section, values in stored.items() if isinstance(values, dict)
                    for key in values if f"{section}.{key}" not in NOT_THE_RECIPE]
        assert {("train", "epochs"), ("optim", "lr_max")} <= set(compared)
        differ = [f"{section}.{key}" for section, key in compared if stored[section][key] != today[section][key]]
        assert differ == [], (r["run_id"], r["preset"], differ)
