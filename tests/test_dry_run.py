"""`--dry-run` approves exactly what the run then trains: drawn configs (edge values of the config tree's keys)
get the same verdict from the dry run and from the real run, refused in one line with exit 2 or trained through its
first timed step."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import bench.core.train
from bench.cli import main
from bench.core.config import leaf_keys
from bench.core.recipes import RECIPES

BIG = 10 ** 12
# each key's drawn values: the edges of its range and one beyond each, plus values the recipes use
VALUES: dict[str, list[str]] = {
    "train.batch_size": ["0", "1", "32", "65", "50001", str(BIG)],
    "train.epochs": ["0", "1", "2", "1001", str(BIG)],
    "train.target_acc": ["0", "0.5", "1", "1.1"],
    "train.stop_at_target": ["true", "false", "maybe"],
    "train.eval_from": ["0", "1", "2", "50"],
    "train.seed": ["-1", "0", str(2 ** 63)],
    "train.eval_batch_size": ["0", "1", "64", "50001"],
    "train.warmup_steps": ["0", "1", "3", "5", "1001", str(BIG)],
    "train.device": ["auto", "cpu", "cuda", "cuda:1", "cudax"],
    "train.precision": ["fp32", "bf16", "fp16", "fp8"],
    "train.channels_last": ["true", "false"],
    "train.compile": ["off", "graph", "reduce-overhead", "fast"],
    "train.sync_bn": ["true", "false"],
    "train.tta": ["none", "flip", "flip_translate", "all"],
    "data.data_dir": ["/nonexistent/cifar"],
    "data.pipeline": ["device", "dataloader", "dali", "gpu"],
    "data.train_subset": ["-1", "0", "1", "33", "64"],
    "data.test_subset": ["-1", "0", "1", "64"],
    "data.workers": ["-1", "0", "1", "257"],
    "data.drop_last": ["true", "false"],
    "aug.crop_padding": ["-1", "0", "2", "16", "17"],
    "aug.flip": ["true", "false"],
    "aug.cutout_size": ["-1", "0", "8", "32", "33"],
    "aug.cutout_prob": ["-0.1", "0", "1", "1.5"],
    "aug.cutout_clip": ["true", "false"],
    "aug.flip_alternate": ["true", "false"],
    "model.norm": ["bn", "gn", "ln", "in"],
    "model.dropout": ["0", "0.5", "1"],
    "model.logit_scale": ["0", "0.125", "-1", "inf"],
    "init.whiten": ["true", "false"],
    "init.whiten_images": ["0", "1", "64"],
    "init.whiten_eps": ["0", "5e-4", "nan"],
    "init.whiten_frozen": ["true", "false"],
    "init.dirac": ["true", "false"],
    "optim.optimizer": ["adam", "sgd", "lamb"],
    "optim.lr_max": ["0", "1e-3", "0.4", "inf", "nan"],
    "optim.lr_div": ["0.5", "1", "25"],
    "optim.final_div": ["0.5", "1", "1000"],
    "optim.pct_start": ["0", "0.25", "0.99", "1"],
    "optim.anneal": ["linear", "cos", "step"],
    "optim.weight_decay": ["-1", "0", "5e-4"],
    "optim.momentum": ["0", "0.6", "1"],
    "optim.label_smoothing": ["0", "0.2", "1"],
    "optim.ema_decay": ["0", "0.99", "1"],
    "optim.ema_every": ["0", "1", "5"],
    "optim.norm_scale_frozen": ["true", "false"],
    "optim.norm_bias_lr_scale": ["0", "1", "64"],
    "optim.muon_lr": ["-1", "0", "0.12"],
    "optim.muon_momentum": ["0", "0.6", "1"],
    "optim.muon_ns_steps": ["0", "1", "3", "100"],
}
# keys not drawn, each with its reason: none may be added to the config without a line here or above
NOT_DRAWN = {
    "preset": "a label chosen by --preset, refused as an override",
    "variant": "a label chosen by --variant, refused as an override",
    "profile": "a label chosen by --profile, refused as an override",
    "results_dir": "the test's own folder (refusals of it: tests/test_cli.py)",
    "model.norm_kernel": "triton runs interpreted on a CPU: minutes a step (its refusals: tests/test_cli.py)",
    "optim.lr_source": "a free-text note",
}
TINY = {"data.train_subset": "64", "data.test_subset": "64", "train.batch_size": "32", "train.eval_batch_size": "64",
        "train.epochs": "1"}


class FirstStep(BaseException):
    """Raised once the first timed step has run: the run trained."""


def test_every_key_is_drawn_or_excused():
    assert set(VALUES) | set(NOT_DRAWN) == set(leaf_keys()), "add the new key to VALUES or NOT_DRAWN"
    assert not set(VALUES) & set(NOT_DRAWN)


@pytest.fixture(scope="module")
def patched(cifar):
    """The real data without a reload per example; a step that stops the run after the first timed step."""
    mp = pytest.MonkeyPatch()
    mp.setattr(bench.core.train, "load_cifar10", lambda *a, **k: cifar)
    timed = {"on": False}

    class Timer(bench.core.train.Timer):
        def start(self):
            timed["on"] = True
            super().start()

    real_step = bench.core.train.TrainStep.step

    def step(self, x, y):
        real_step(self, x, y)
        if timed["on"]:
            raise FirstStep

    mp.setattr(bench.core.train, "Timer", Timer)
    mp.setattr(bench.core.train.TrainStep, "step", step)
    yield timed
    mp.undo()


def verdict(argv: list[str], capsys, timed) -> str:
    timed["on"] = False
    capsys.readouterr()  # what an earlier run printed before its first step stopped it
    try:
        rc = main(argv)
    except FirstStep:
        return "trained"
    out, err = capsys.readouterr()
    if rc == 0:
        assert "--dry-run" in argv and out.startswith("checks passed"), (out, err)
        return "trained"  # what the dry run promises
    assert rc == 2, f"exit {rc}: {err}"
    assert err.count("\n") == 1, err
    return "refused: " + err.split(":", 1)[0]


@pytest.mark.long
@settings(max_examples=24, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(preset=st.sampled_from(sorted(RECIPES)), variant=st.sampled_from(["", "eager", "fast"]),
       drawn=st.dictionaries(st.sampled_from(sorted(VALUES)), st.just(""), min_size=1, max_size=3).flatmap(
           lambda keys: st.fixed_dictionaries({k: st.sampled_from(VALUES[k]) for k in keys})))
def test_the_dry_run_agrees_with_the_run(preset, variant, drawn, patched, capsys, tmp_path_factory, cifar_dir,
                                         monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
    over = {**TINY, "data.data_dir": str(cifar_dir), **drawn}
    res = tmp_path_factory.mktemp("res")
    argv = ["run", f"--preset={preset}", "--profile=full", f"--results_dir={res}",
            *([f"--variant={variant}"] if variant else []), *(f"--{k}={v}" for k, v in over.items())]
    dry = verdict([*argv, "--dry-run"], capsys, patched)
    real = verdict(argv, capsys, patched)
    assert dry == real, f"{' '.join(argv)}: dry run {dry}, real run {real}"
