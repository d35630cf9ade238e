"""`python -m bench ladder`: the rung filter (CUDA-only rungs skipped on a CPU, one line each, printed after the
checks' verdict), the dry run, and --tensorboard handed to every rung."""
import pytest

from bench.core.config import ConfigError
from bench.core.variants import LADDER
from bench.ladder import runnable
# the CLI as tests/test_cli.py calls it (a later --key=value replaces an earlier one), with its fixtures: `trained`
# stands in for training, `base` is a run's arguments, `md5_cache` keeps the data's MD5 cache in the test's folder
from tests.test_cli import base, main, md5_cache, trained  # noqa: F401
from tests.test_steplog import overrides


def test_ladder_skips_cuda_only_rungs_on_a_cpu_with_one_line_each():
    keep, lines = runnable(list(reversed(LADDER)), "cpu")
    assert keep == ["eager", "device", "bf16", "channels-last", "compile"]
    assert [l.split()[1] for l in lines] == ["cuda-graphs", "triton"] and all("skipped" in l for l in lines)
    assert runnable(["triton", "eager"], "cuda") == (["eager", "triton"], [])
    with pytest.raises(ConfigError, match="the rungs are"):
        runnable(["eager", "warp-speed"], "cpu")
    with pytest.raises(ConfigError, match="can run on a cpu"):
        runnable(["cuda-graphs"], "cpu")


def test_ladder_names_its_skipped_rungs_after_the_verdict(capsys, trained, base):
    assert main(["ladder", *base, "--rungs=eager,triton", "--dry-run"]) == 0 and trained == []
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("checks passed: ladder would start") and lines[0].endswith("/eager)"), lines
    assert lines[1].startswith("ladder: triton skipped on this cpu") and len(lines) == 2, lines


def test_ladder_dry_run_checks_without_training(capsys, trained, base):
    assert main(["ladder", *base, "--rungs=eager,device", "--dry-run"]) == 0 and trained == []
    out = capsys.readouterr().out
    assert out.startswith("checks passed: ladder would start") and "/eager, " in out and out.endswith("/device)\n"), out


def test_ladder_passes_tensorboard_to_every_rung(monkeypatch, tmp_path, cifar, cifar_dir):
    seen = []
    monkeypatch.setattr("bench.race.load_cifar10", lambda *a, **k: cifar)
    monkeypatch.setattr("bench.race.train", lambda cfg, data, **k: seen.append((cfg.variant, k)))
    monkeypatch.setattr("bench.race.race_table", lambda *a: "")
    monkeypatch.setattr("bench.ladder.results_frame", lambda results: None)
    monkeypatch.setattr("bench.ladder.ladder_table", lambda frame: [])
    args = ["ladder", "--rungs=eager,device", "--profile=full", f"--data_dir={cifar_dir}",
            *[f"--{k}={v}" for k, v in overrides(tmp_path).items()]]
    assert main(args + ["--tensorboard"]) == 0
    assert seen == [("eager", {"tensorboard": True}), ("device", {"tensorboard": True})]
