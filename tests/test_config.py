import json

import pytest

from bench.cli import main, parse_overrides
from bench.core.config import ConfigError, RunConfig, from_dict
from bench.core.recipes import seed_recipe
from bench.core.variants import build_config


def test_seed_recipe_is_the_reference():
    cfg = seed_recipe()
    assert (cfg.train.batch_size, cfg.train.epochs, cfg.optim.optimizer) == (512, 24, "adam")
    assert cfg.optim.pct_start == pytest.approx(5 / 24)
    assert cfg.optim.final_div == 1.0  # no annihilation: ends at the start LR
    assert (cfg.aug.crop_padding, cfg.aug.flip, cfg.aug.cutout_size) == (4, True, 8)
    assert cfg.train.target_acc == 0.90


def test_overrides_dotted_and_bare_keys():
    cfg = build_config("seed", None, "full", {"train.epochs": "3", "lr_max": "0.01", "flip": "false"})
    assert cfg.train.epochs == 3 and cfg.optim.lr_max == 0.01 and cfg.aug.flip is False


@pytest.mark.parametrize("overrides, message", [
    ({"batch_size": "0"}, "batch_size=0"),
    ({"lr_max": "-1"}, "lr_max"),
    ({"target_acc": "1.5"}, "target_acc=1.5"),
    ({"nonsense": "1"}, "unknown config key 'nonsense'"),
    ({"epochs": "three"}, "not a valid int"),
    ({"pipeline": "tape"}, "data.pipeline='tape'"),
    ({"norm": "gn", "norm_kernel": "triton"}, "needs model.norm=bn"),
    ({"device": "cudax"}, "train.device='cudax'"),
    ({"device": "cuda:"}, "train.device='cuda:'"),
    ({"lr_max": "inf"}, "optim.lr_max=inf must be a finite number"),
    ({"lr_div": "1e400"}, "optim.lr_div=inf must be a finite number"),
    ({"logit_scale": "inf"}, "model.logit_scale=inf must be a finite number"),
    ({"target_acc": "nan"}, "target_acc=nan"),
])
def test_invalid_values_are_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_config("seed", None, "full", overrides)


def test_unknown_preset_variant_profile():
    for kwargs in ({"preset": "nope"}, {"variant": "nope"}, {"profile": "nope"}):
        with pytest.raises(ConfigError, match="nope"):
            build_config(**kwargs)


@pytest.mark.parametrize("native, precision", [(True, "bf16"), (False, "fp32")])
def test_variants_differ_where_they_should(monkeypatch, native, precision):
    """The CPU's bf16 probe stood in both ways (tests/test_variants.py covers each kind of machine)."""
    monkeypatch.setattr("bench.core.machine.cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr("bench.core.variants.cpu_has_native_bf16", lambda: native, raising=False)
    eager = build_config("seed", "eager", "full", device_type="cpu")
    fast = build_config("seed", "fast", "full", device_type="cpu")
    assert (eager.data.pipeline, eager.train.precision, eager.train.channels_last) == ("dataloader", "fp32", False)
    assert (fast.data.pipeline, fast.train.precision, fast.train.channels_last) == ("device", precision, True)
    assert build_config("seed", "fast", "full", device_type="cuda").train.precision == "bf16"
    assert fast.optim == eager.optim and fast.aug == eager.aug  # same recipe
    assert build_config("seed", "fast", "full", device_type="cuda").train.compile == "default"


def test_smoke_profile_is_smaller_but_same_recipe():
    cfg = build_config("seed", None, "smoke")
    assert 0 < cfg.data.train_subset < 50000 and cfg.train.epochs < 24
    assert cfg.optim == RunConfig().optim


def test_config_round_trips_through_json():
    cfg = build_config("seed", "fast", "smoke", {"seed": "7"})
    assert from_dict(json.loads(cfg.to_json())) == cfg


def test_cli_rejects_bad_input_before_running(capsys):
    assert main(["run", "--profile=full", "--train.batch_size=0"]) == 2
    assert "batch_size=0" in capsys.readouterr().err
    assert main(["run", "--profile=full", "positional"]) == 2
    with pytest.raises(ConfigError, match="ambiguous|unknown"):
        parse_overrides(["--bogus=1"])


def test_cli_names_missing_data_without_a_traceback(tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    rc = main(["run", "--profile=smoke", f"--data_dir={missing}", f"--results_dir={tmp_path / 'results'}"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("data error:") and str(missing) in err and "does not exist" in err
    assert "Traceback" not in err
    assert not (tmp_path / "results" / "runs.csv").exists()


def test_device_names_that_are_accepted():
    for name in ("auto", "cpu", "cuda", "cuda:1"):
        assert build_config("seed", None, "full", {"device": name}).train.device == name


def test_a_changed_recipe_is_named_as_such_in_the_row():
    """An override of a recipe key makes another recipe: its preset label lists the changes, so the leaderboard
    cannot rank it as the preset. Seeds, paths, subsets, devices and execution settings keep the name."""
    from bench.core.config import leaf_keys
    from bench.core.recipes import RECIPE_KEYS
    assert set(RECIPE_KEYS) <= set(leaf_keys())
    same = {"seed": "3", "results_dir": "x", "train_subset": "1000", "device": "cpu", "compile": "default",
            "precision": "fp32", "eval_from": "2", "stop_at_target": "false", "target_acc": "0.5", "epochs": "4",
            "lr_source": "a note"}
    assert build_config("fast4", "fast", "full", same).preset == "fast4"
    cfg = build_config("fast4", "fast", "full", {"whiten": "false", "ema_every": "1", "aug.cutout_size": "8"})
    assert cfg.preset == "fast4(cutout_size=8, whiten=false, ema_every=1)"
    assert cfg.init.whiten is False and cfg.optim.ema_every == 1 and cfg.aug.cutout_size == 8
    assert build_config("seed", None, "smoke", {"lr_max": "0.01"}).preset == "seed(lr_max=0.01)"
    assert build_config("seed", None, "smoke").preset == "seed"  # the profile's own changes are not overrides


def test_cross_key_checks_do_not_depend_on_the_order():
    """fast trains by SGD with momentum 0.9: momentum 0 is refused alone, accepted with Adam in either order (a
    section validated after each key would refuse `momentum=0, optimizer=adam` on the way)."""
    with pytest.raises(ConfigError, match="Nesterov SGD needs a momentum"):
        build_config("fast4", overrides={"optim.momentum": "0"})
    for order in (["optim.momentum", "optim.optimizer"], ["optim.optimizer", "optim.momentum"]):
        values = {"optim.momentum": "0", "optim.optimizer": "adam"}
        cfg = build_config("fast4", overrides={k: values[k] for k in order})
        assert (cfg.optim.optimizer, cfg.optim.momentum) == ("adam", 0.0)
