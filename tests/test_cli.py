"""Refusals before training: one line on stderr naming cause and fix, exit code 2, no row, no training started."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.cli import main as cli_main
from bench.core.config import resolve_key

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    """The CLI on `base` with some keys changed: a later `--key=value` replaces an earlier one of the same key
    (the CLI itself refuses a key given twice; `test_a_key_given_twice_is_refused` calls it as typed)."""
    keyed: dict[str, str] = {}
    for arg in argv:
        name = arg[2:].split("=", 1)[0].replace("-", "_") if arg.startswith("--") and "=" in arg else None
        try:
            key = resolve_key(name) if name else arg
        except Exception:
            key = name
        keyed.pop(key, None)
        keyed[key] = arg
    return cli_main(list(keyed.values()))


@pytest.fixture(autouse=True)
def md5_cache(tmp_path_factory, monkeypatch):
    """One MD5 cache for this module's tests (the real files are hashed once), never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def trained(monkeypatch):
    """Stands in for every way a command trains: records the configs it was given instead."""
    import bench.ladder  # imported now, so that its `from .race import race` binds the real race, not this stub
    calls = []
    monkeypatch.setattr("bench.run.train", lambda cfg, *a, **k: calls.append(cfg))
    monkeypatch.setattr("bench.race.race", lambda *a, **k: calls.append(a) or {})
    monkeypatch.setattr("bench.ladder.race", lambda *a, **k: calls.append(a) or {})
    monkeypatch.setattr("bench.tools.lr_find.run_finder", lambda cfg, *a, **k: calls.append(cfg))
    return calls


@pytest.fixture
def base(tmp_path, cifar_dir):
    return ["--profile=full", f"--data_dir={cifar_dir}", "--train_subset=256", "--test_subset=256", "--epochs=1",
            "--batch_size=64", f"--results_dir={tmp_path / 'res'}"]


def refused(capsys, argv, *needles, trained=None):
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err  # one line
    assert out == "", out  # nothing before the refusal (no smoke-profile note either)
    for needle in needles:
        assert needle in err, err
    if trained is not None:
        assert trained == [], "training started"
    return err


def test_a_good_run_reaches_training(capsys, trained, base, tmp_path):
    """The control for every refusal below: the same base arguments are accepted."""
    assert main(["run", *base]) == 0
    assert len(trained) == 1 and trained[0].results_dir == str(tmp_path / "res")


def test_malformed_runs_csv_line_is_named_before_training(capsys, trained, base, tmp_path):
    res = tmp_path / "res"
    res.mkdir()
    text = "run_id,status\nr1,reached\nr2,reached,extra\n"
    (res / "runs.csv").write_text(text)
    refused(capsys, ["run", *base], f"{res / 'runs.csv'} line 3", "3 fields where the header has 2", trained=trained)
    assert (res / "runs.csv").read_text() == text


def test_results_dir_that_is_a_file(capsys, trained, base, tmp_path):
    (tmp_path / "file").write_text("x")
    for cmd in ("run", "race", "lr-find"):
        refused(capsys, [cmd, *base, f"--results_dir={tmp_path / 'file'}"], "is a file", trained=trained)


def test_results_dir_that_cannot_be_written(capsys, trained, base, monkeypatch):
    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr("bench.records.results.tempfile.mkstemp", denied)  # root writes anywhere: simulate a read-only one
    refused(capsys, ["run", *base], "cannot write in results folder", "Permission denied", trained=trained)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_results_dir(capsys, trained, base, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    refused(capsys, ["run", *base, f"--results_dir={ro}"], "cannot write in results folder", trained=trained)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible here")
def test_cuda_without_cuda(capsys, trained, base):
    refused(capsys, ["run", *base, "--device=cuda"], "no CUDA device is visible", "--device=cpu", trained=trained)


def test_batch_larger_than_the_training_subset(capsys, trained, base):
    refused(capsys, ["run", *base, "--batch_size=512"], "larger than the 256 training images", trained=trained)


def test_indivisible_batch_under_torchrun_is_printed_once(capsys, trained, base, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "1")
    assert main(["race", *base, "--batch_size=512"]) == 2
    assert capsys.readouterr() == ("", "")  # rank 1 refuses silently
    monkeypatch.setenv("RANK", "0")
    refused(capsys, ["race", *base, "--batch_size=512"], "does not split evenly over 3 ranks", trained=trained)


def test_dry_run_checks_without_training(capsys, trained, base, monkeypatch):
    """What `make bench GPUS=N` can run once, before torchrun starts N processes (whose failures torchrun reports
    at length): the same checks, one process, WORLD_SIZE as torchrun will set it."""
    assert main(["race", *base, "--dry-run"]) == 0 and trained == []
    assert capsys.readouterr().out.startswith("checks passed: race")
    assert main(["run", *base, "--preset=fast4", "--variant=eager", "--whiten=false", "--dry-run"]) == 0
    out = capsys.readouterr().out  # the label names each recipe key the overrides changed
    assert out == "checks passed: run would start (fast4(whiten=false, batch_size=64, epochs=1)/eager)\n", out
    monkeypatch.setenv("WORLD_SIZE", "3")
    refused(capsys, ["race", *base, "--batch_size=512", "--dry_run"], "over 3 ranks", trained=trained)


def test_missing_dali_is_a_missing_package(capsys, trained, base, monkeypatch):
    monkeypatch.setattr("pipeline.dali.dali_available", lambda: (False, "NVIDIA DALI is unavailable (ImportError)"))
    err = refused(capsys, ["run", *base, "--pipeline=dali"], "NVIDIA DALI is unavailable", trained=trained)
    assert err.startswith("missing package:")


def test_corrupt_pixels_are_refused(capsys, trained, base, tmp_path, cifar_dir):
    """Same size, valid labels, one pixel byte changed: only the MD5 tells."""
    bad = tmp_path / "data"
    bad.mkdir()
    for f in cifar_dir.iterdir():
        (bad / f.name).symlink_to(f)
    (bad / "data_batch_3.bin").unlink()
    raw = bytearray((cifar_dir / "data_batch_3.bin").read_bytes())
    raw[5000] ^= 0xFF  # a pixel of record 1
    (bad / "data_batch_3.bin").write_bytes(bytes(raw))
    err = refused(capsys, ["run", *base, f"--data_dir={bad}"], "data_batch_3.bin has MD5", trained=trained)
    assert err.startswith("data error:")


def test_ctrl_c_is_one_line_and_exit_130(capsys, base, monkeypatch):
    def interrupted(cfg, *a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr("bench.run.train", interrupted)
    try:
        rc = main(["run", *base])
    except KeyboardInterrupt:
        rc = "escaped"
    err = capsys.readouterr().err
    assert rc == 130 and err.count("\n") == 1 and err.startswith("interrupted (Ctrl-C)")


def test_sigterm_is_one_line_and_exit_143(tmp_path, cifar_dir):
    """A real process killed by SIGTERM while it trains: one line, exit 143, no row."""
    import signal
    res = tmp_path / "res"
    code = ("import os, signal, sys, bench.run\n"
            "def train(cfg, *a, **k):\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    raise AssertionError('SIGTERM did not stop the run')\n"
            "bench.run.train = train\n"
            "from bench.cli import main\n"
            f"sys.exit(main(['run', '--profile=full', '--data_dir={cifar_dir}', '--train_subset=256', "
            f"'--test_subset=256', '--epochs=1', '--batch_size=64', '--results_dir={res}']))\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 143, (p.returncode, p.stderr)
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("terminated (SIGTERM)"), p.stderr
    assert not (res / "runs.csv").exists()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # this process's handler is untouched


def test_show_config_and_config_errors_print_no_profile_note(capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # where the note would be printed
    assert main(["show-config"]) == 0
    assert json.loads(capsys.readouterr().out)["profile"] == "smoke"
    refused(capsys, ["run", "--epochs=0"], "train.epochs=0")


def test_no_abbreviated_options(capsys, trained, base):
    refused(capsys, ["run", *base, "--lr=1"], "unknown config key 'lr'", trained=trained)  # not --lr-from-finder
    refused(capsys, ["race", *base, "--variant=fast"], "--variants", trained=trained)  # not --variants


def test_results_dir_in_both_spellings(capsys, trained, base, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("bench.records.leaderboard.main", lambda results_dir: seen.append(results_dir) or 0)
    assert main(["leaderboard", f"--results_dir={tmp_path}"]) == 0
    assert main(["leaderboard", f"--results-dir={tmp_path}"]) == 0
    assert seen == [str(tmp_path)] * 2
    assert main(["run", *base, f"--results-dir={tmp_path / 'dashed'}"]) == 0
    assert trained[-1].results_dir == str(tmp_path / "dashed")


def test_cli_chooses_the_triton_interpreter_for_a_cpu_run(capsys, trained, base, monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert main(["run", *base, "--norm_kernel=triton", "--device=cpu"]) == 0
    assert os.environ.get("TRITON_INTERPRET") == "1" and len(trained) == 1


def test_runs_csv_with_a_foreign_header_is_refused_before_training(capsys, trained, base, tmp_path):
    from bench.records.results import RUN_COLUMNS
    res = tmp_path / "res"
    res.mkdir()
    renamed = ["run id" if c == "run_id" else c for c in RUN_COLUMNS]
    (res / "runs.csv").write_text(",".join(renamed) + "\n")
    refused(capsys, ["run", *base], "runs.csv", "run id", trained=trained)
    (res / "runs.csv").write_text(";".join(RUN_COLUMNS) + "\n")  # a spreadsheet's semicolons
    refused(capsys, ["run", *base], "runs.csv", "header", trained=trained)


def test_a_lock_path_that_is_a_folder_is_refused_before_training(capsys, trained, base, tmp_path):
    (tmp_path / "res" / "runs.csv.lock").mkdir(parents=True)
    refused(capsys, ["run", *base], "runs.csv.lock", "folder", trained=trained)


@pytest.mark.parametrize("argv, env, needle", [
    (["run", "--seed=99999999999999999999999"], {}, "train.seed"),
    (["run", "--seed=-1"], {}, "train.seed"),
    (["lr-find", "--end-lr=inf"], {}, "finite"),
    (["lr-find", "--end-lr=nan"], {}, "finite"),
    (["run"], {"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc'"),
    (["race", "--variants=fast"], {"WORLD_SIZE": "0"}, "GPUS=N"),
    (["step-bench", "--batch-sizes=abc"], {}, "--batch-sizes='abc'"),
    (["step-bench", "--batch-sizes=0"], {}, "--batch-sizes='0'"),
])
def test_odd_numbers_are_one_line_before_anything_runs(capsys, trained, base, monkeypatch, argv, env, needle):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr("bench.tools.step_bench.build_model", lambda *a, **k: pytest.fail("step-bench started"))
    refused(capsys, argv if argv[0] == "step-bench" else argv + base, needle, trained=trained)


def test_lr_from_finder_without_a_suggestion_is_one_line(capsys, base, monkeypatch):
    from bench.tools.lr_find import LRFindResult
    monkeypatch.setattr("bench.tools.lr_find.run_finder", lambda cfg, *a, **k: LRFindResult(lrs=[1.0, 2.0]))
    monkeypatch.setattr("bench.run.train", lambda *a, **k: pytest.fail("trained without an LR"))
    rc = main(["run", "--lr-from-finder", *base])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no suggestion" in err and "--lr_max" in err, err


# ---- reliability round 3: each of these failed (a traceback, a wrong line, or a silent misreading) before its fix

@pytest.fixture
def tiny(tmp_path, cifar_dir):
    """Arguments of a real run that trains in seconds: 64 images, batches of 32, one epoch."""
    return ["--profile=full", f"--data_dir={cifar_dir}", "--train_subset=64", "--test_subset=64", "--epochs=1",
            "--batch_size=32", "--eval_batch_size=64", f"--results_dir={tmp_path / 'res'}"]


def rows(tmp_path) -> list[dict]:
    import csv
    with open(tmp_path / "res" / "runs.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("cmd", ["race", "ladder"])
def test_the_configs_checked_are_the_configs_raced_for_the_device_asked(monkeypatch, trained, base, cmd):
    """On a machine with CUDA, --device=cpu races the CPU form of each variant (no compile), as checked."""
    monkeypatch.setattr("bench.cli.default_device_type", lambda: "cuda")
    opt = "--variants=eager,fast" if cmd == "race" else "--rungs=eager,compile"
    assert main([cmd, *[a for a in base if a != "--profile=full"], "--profile=smoke", "--device=cpu", opt]) == 0
    (args,) = [a for a in trained if isinstance(a, tuple)]
    cfgs = args[0]
    assert [c.train.device for c in cfgs] == ["cpu", "cpu"]
    compiled = (cfgs[1].train.compile, cfgs[1].train.warmup_steps)
    assert compiled == (("off", 0) if cmd == "race" else ("default", 3))  # fast's CPU form; the compile rung


def test_each_flag_has_one_spelling_and_the_other_is_read_with_a_note(capsys, trained, base, tmp_path):
    """Options take dashes, config keys underscores; the other spelling is read, and a note after the verdict (never
    before a refusal) names the one to write."""
    argv = [a.replace("--train_subset", "--train-subset") for a in base]
    assert main(["run", *argv, "--variant=eager", "--dry-run"]) == 0 and trained == []
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("checks passed") and lines[1:] == [
        "note: --train-subset is written --train_subset (a config key); read as that"]
    assert main(["ladder", *argv, "--rungs=eager,triton", "--dry-run"]) == 0  # beside the ladder's own notes
    lines = capsys.readouterr().out.splitlines()
    assert "note: --train-subset is written --train_subset (a config key); read as that" in lines
    assert any(line.startswith("ladder: triton skipped") for line in lines)
    from tests.test_leaderboard import add_run
    add_run(tmp_path / "board", "r1", "GPU-A", "fast", [0.95], 2.0)
    assert main(["leaderboard", f"--results_dir={tmp_path / 'board'}"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "note: --results_dir is written --results-dir; read as that"
    refused(capsys, ["run", *argv, "--epochs=0"], "train.epochs=0")  # a refusal stays the only line
    assert main(["run", *base, "--variant=eager", "--dry-run"]) == 0
    assert "note" not in capsys.readouterr().out  # each flag in its one spelling: no note


def test_a_warm_up_longer_than_the_run_trains(capsys, tiny, tmp_path):
    """Two steps an epoch, five warm-up steps asked: the warm-up takes the two (it indexed past the schedule)."""
    assert main(["run", "--preset=fast4", "--variant=fast", *tiny, "--warmup_steps=5"]) == 0
    assert "warm-up: 2 of train.warmup_steps=5 steps" in capsys.readouterr().out
    assert len(rows(tmp_path)) == 1


def test_a_partial_last_batch_counts_its_own_images(tiny, tmp_path):
    """33 images in batches of 32 without drop_last: 33 images an epoch, not 64."""
    argv = [a for a in tiny if not a.startswith("--train_subset")]
    assert main(["run", "--variant=fast", *argv, "--train_subset=33", "--drop_last=false"]) == 0
    (row,) = rows(tmp_path)
    assert float(row["images_per_s"]) * float(row["train_time_s"]) == pytest.approx(33, rel=1e-3)


def test_ctrl_c_while_drawing_the_report_says_the_row_is_in(capsys, tiny, tmp_path, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr("bench.run.write_report", interrupted)
    assert main(["run", "--variant=fast", *tiny]) == 130
    err = capsys.readouterr().err
    (row,) = rows(tmp_path)
    assert f"while writing the report of run {row['run_id']}: its row is in runs.csv" in err, err
    assert f"make report RUN={row['run_id']}" in err and "wrote no row" not in err
    npy = tmp_path / "res" / "runs" / row["run_id"] / "test_predictions.npy"
    assert npy.stat().st_size > 64  # saved whole before the report began


@pytest.mark.parametrize("cmd", ["run", "lr-find", "race"])
def test_sgd_without_momentum_is_refused(capsys, trained, base, cmd):
    refused(capsys, [cmd, *base, "--preset=fast4", "--momentum=0"], "Nesterov SGD needs a momentum", trained=trained)


@pytest.mark.parametrize("cmd", ["run", "race", "ladder", "lr-find"])
def test_the_old_name_of_a_renamed_recipe_is_refused_naming_the_new_one(capsys, trained, base, cmd):
    """`fast` is a variant; the 4-epoch recipe it also named is `fast4` now (its old rows read as fast4)."""
    refused(capsys, [cmd, *base, "--preset=fast"], "now called 'fast4'", "--preset=fast4", "--variant=fast",
            trained=trained)


def test_profile_refuses_sgd_without_momentum(capsys, monkeypatch):
    monkeypatch.setattr("bench.tools.step_profile.main", lambda *a, **k: pytest.fail("profiled"))
    refused(capsys, ["profile", "--momentum=0"], "Nesterov SGD needs a momentum")


@pytest.mark.parametrize("arg, needle", [
    ("--epochs=1000000000", "train.epochs=1000000000 must be in [1, 1,000]"),
    ("--warmup_steps=100000000000000000000", "train.warmup_steps"),
    ("--workers=100000", "data.workers=100000 must be in [0, 256]"),
    ("--batch_size=100000000", "train.batch_size=100000000 must be in [1, 50,000]"),
    ("--eval_batch_size=100000000", "train.eval_batch_size"),
])
def test_absurd_sizes_are_refused(capsys, trained, base, arg, needle):
    refused(capsys, ["run", *base, arg], needle, trained=trained)


def test_absurd_tool_sizes_are_refused(capsys, monkeypatch):
    for tool in ("choose", "step_profile"):
        monkeypatch.setattr(f"bench.tools.{tool}.main", lambda *a, **k: pytest.fail("the tool ran"))
    # step-bench's own parser refuses it, before the first thing the bench does
    monkeypatch.setattr("bench.tools.step_bench.environment", lambda *a, **k: pytest.fail("the step bench began"))
    refused(capsys, ["step-bench", "--batch-sizes=100000000"], "100,000,000 is more than the 50,000")
    refused(capsys, ["choose-fast", "--batch-size=100000"], "--batch-size")
    refused(capsys, ["profile", "--steps=100000000"], "--steps in [1, 10000]")
    refused(capsys, ["race", "--runs=100000000", "--dry-run"], "--runs in [1, 10000]")


def test_a_compile_without_a_cpp_compiler_is_refused(capsys, trained, base, monkeypatch):
    monkeypatch.setattr("bench.preflight.cpp_compiler_problem", lambda: "none found (no g++ on PATH)")
    err = refused(capsys, ["run", *base, "--compile=default"], "none found (no g++ on PATH)", "--compile=off",
                  trained=trained)
    assert err.startswith("missing package:")
    assert main(["run", *base]) == 0 and len(trained) == 1  # compile off needs no compiler


def test_home_folders_are_expanded_and_an_empty_results_dir_refused(capsys, trained, base, tmp_path, monkeypatch,
                                                                    cifar_dir):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "c10").symlink_to(cifar_dir)
    assert main(["run", *base, "--results_dir=~/res", "--data_dir=~/c10"]) == 0
    assert trained[-1].results_dir == str(tmp_path / "home" / "res")
    assert trained[-1].data.data_dir == str(tmp_path / "home" / "c10")
    assert not (tmp_path / "~").exists()
    capsys.readouterr()  # the run's own lines (a note about this CPU's bf16 among them), not the refusal's
    refused(capsys, ["run", *base, "--results_dir="], "results_dir is empty", trained=trained[:0])
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("cmd", [["step-bench"], ["profile"], ["pipeline-bench"], ["choose-fast"], ["kernel-bench"],
                                 ["kernel-static"]])
def test_a_tool_results_dir_that_is_a_file_is_refused_before_the_tool_runs(capsys, tmp_path, monkeypatch, cmd):
    for tool in ("step_bench", "step_profile", "pipeline_bench", "choose", "kernel_bench", "kernel_static"):
        monkeypatch.setattr(f"bench.tools.{tool}.main", lambda *a, **k: pytest.fail("the tool ran"))
    (tmp_path / "file").write_text("x")
    refused(capsys, [*cmd, f"--results-dir={tmp_path / 'file' / 'sub'}"], "is a file, not a folder")


def test_a_key_given_twice_is_refused(capsys, trained, base):
    argv = ["run", *[a for a in base if not a.startswith("--epochs")], "--epochs=2", "--train.epochs=3"]
    assert cli_main(argv) == 2 and trained == []
    err = capsys.readouterr().err
    assert err == "config error: train.epochs is given twice (--epochs=2 and --train.epochs=3): give it once\n", err


@pytest.mark.parametrize("cmd, arg", [("race", "--variants=eager,fast,eager"), ("ladder", "--rungs=device,device")])
def test_a_variant_named_twice_is_refused(capsys, trained, base, cmd, arg):
    refused(capsys, [cmd, *base, arg, "--dry-run"], "twice", trained=trained)


def test_triton_kernel_without_triton_is_a_missing_package(capsys, trained, base, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr("bench.preflight.importlib.util.find_spec", lambda name, *a: None if name == "triton"
                        else real(name, *a))
    err = refused(capsys, ["run", *base, "--norm_kernel=triton"], "needs the triton package", "--norm_kernel=eager",
                  trained=trained)
    assert err.startswith("missing package:")


def test_a_cuda_index_past_the_last_device_is_refused(capsys, trained, base, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    refused(capsys, ["run", *base, "--device=cuda:1"], "only 1 CUDA device(s) are visible", "cuda:0..cuda:0",
            trained=trained)
