#!/usr/bin/env python3
"""One-line bugs against the tests meant to catch them: each bug is applied to a copy of this checkout,
the tests named for it run there, and a table says whether they caught it (a named test failed) or missed it.

    .venv/bin/python scripts/bug_check.py [--only TEXT] [--keep]

The copy holds every file git tracks or would track (`git ls-files -co --exclude-standard`: uncommitted work
included) in a temporary folder; the checkout itself is never written. The unmodified copy runs every named test
first: a table over tests that fail without a bug would mean nothing, so that stops the script. CIFAR10_DIR points at
the checkout's shared data when it is there (the copy's own ../shared does not exist). docs/mutants.md records a run.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Bug:
    name: str
    path: str
    old: str  # exact text, found once in the file
    new: str
    tests: tuple[str, ...]
    more: tuple[tuple[str, str, str], ...] = ()  # further (path, old, new) edits of the same bug


CLOCK = "tests/test_timer.py::"
KEYS = "tests/test_recipes.py::"
REACH = KEYS + "test_every_recipe_key_reaches_what_trains"
FIT = KEYS + "test_fit_runs_each_recipes_epochs_evaluation_start_tta_and_ema_cadence"
COUNT = "tests/test_counters.py::"
VARIANT = "tests/test_variants.py"
STATIC = "tests/test_kernel_static.py::"

BUGS = [
    # the four examples
    Bug("label smoothing dropped from the training loss", "bench/core/step.py",
        "F.cross_entropy(logits, y, label_smoothing=cfg.optim.label_smoothing)", "F.cross_entropy(logits, y)",
        (REACH, "tests/test_step.py::test_new_step_matches_the_previous_one")),
    Bug("ema_every not handed to the EMA", "bench/core/train.py",
        "WeightEMA(plain, cfg.optim.ema_decay, cfg.optim.ema_every)", "WeightEMA(plain, cfg.optim.ema_decay)",
        (REACH, FIT)),
    Bug("train.tta missing from the keys that name a recipe", "bench/core/recipes.py",
        '"train.batch_size", "train.tta",', '"train.batch_size",',
        (KEYS + "test_the_label_names_a_recipe_change_and_only_that", KEYS + "test_is_recipe_key_is_exactly_the_recipe_keys")),
    Bug("the warm-up's seconds added to the training time", "bench/core/train.py",
        "    train_time = eval_time = 0.0", "    train_time, eval_time = run.warmup_s, 0.0",
        (CLOCK + "test_the_warm_up_is_off_the_clock",)),
    # the clock's other rules
    Bug("per-epoch evaluation on the training clock", "bench/core/train.py",
        "            eval_time += eval_s", "            eval_time += eval_s; train_time += eval_s",
        (CLOCK + "test_per_epoch_evaluation_is_off_the_clock",)),
    Bug("deciding evaluation on the clock only under flip_translate", "bench/core/train.py",
        '(eval_s if t.tta != "none" else 0.0)', '(eval_s if t.tta == "flip_translate" else 0.0)',
        (CLOCK + "test_the_deciding_evaluation_is_on_the_clock_under_any_tta",)),
    Bug("deciding TTA evaluation off the clock", "bench/core/train.py",
        'train_time + (eval_s if t.tta != "none" else 0.0)', "train_time",
        (CLOCK + "test_the_deciding_evaluation_is_on_the_clock_under_any_tta",)),
    Bug("a later epoch at the target replaces the first", "bench/core/train.py",
        "if target_epoch is None and test_acc is not None", "if test_acc is not None",
        (CLOCK + "test_nothing_after_the_target_epoch_is_on_the_clock",)),
    Bug("the run goes on after the target (stop_at_target ignored)", "bench/core/train.py",
        "            if t.stop_at_target:", "            if False:",
        (CLOCK + "test_nothing_after_the_target_epoch_is_on_the_clock",)),
    Bug("whitening before epoch 1's clock starts", "bench/core/train.py",
        "    timer = Timer(run.device)\n    timer.start()\n    if epoch == 1:\n        init_from_data(run.plain, cfg, run.data)",
        "    if epoch == 1:\n        init_from_data(run.plain, cfg, run.data)\n    timer = Timer(run.device)\n    timer.start()",
        (CLOCK + "test_whitening_is_inside_epoch_ones_clock",)),
    # counters where a run or a capture starts
    Bug("step index not reset after the warm-up", "bench/core/step.py",
        "        self.i.zero_()\n        self.new_epoch()", "        self.new_epoch()",
        (COUNT + "test_a_warm_up_leaves_every_counter_at_zero", COUNT + "test_a_run_after_a_warm_up_trains_as_one_without")),
    Bug("host step count not reset after the warm-up", "bench/core/step.py",
        "        self.steps = 0\n        if self.ema is not None:\n            self.ema.reset()",
        "        if self.ema is not None:\n            self.ema.reset()",
        (COUNT + "test_a_warm_up_leaves_every_counter_at_zero", COUNT + "test_a_run_after_a_warm_up_trains_as_one_without")),
    Bug("EMA update count not reset by the step", "bench/core/step.py",
        "            self.ema.reset()  #", "            pass  #",
        (COUNT + "test_a_warm_up_leaves_every_counter_at_zero", COUNT + "test_a_run_after_a_warm_up_trains_as_one_without")),
    Bug("WeightEMA.reset forgets nothing", "bench/core/ema.py",
        "would.\"\"\"\n        self.updates = 0", "would.\"\"\"\n        pass",
        ("tests/test_ema.py::test_the_ema_forgets_its_updates_on_reset", COUNT + "test_a_warm_up_leaves_every_counter_at_zero")),
    Bug("optimizer state kept through the reset", "bench/core/step.py",
        "                    value.zero_()", "                    pass",
        (COUNT + "test_a_warm_up_leaves_every_counter_at_zero", COUNT + "test_a_run_after_a_warm_up_trains_as_one_without")),
    Bug("fp16 loss scale kept through the reset", "bench/core/step.py",
        "            self.scaler.load_state_dict(self._scaler_start)", "            pass",
        (COUNT + "test_the_loss_scale_starts_over_after_a_warm_up",)),
    Bug("a capture's extra calls left in the counters", "bench/core/step.py",
        "            rewind()\n            self.replay()\n            return", "            self.replay()\n            return",
        (COUNT + "test_a_capture_puts_back_the_counters_its_extra_calls_moved",)),
    # the variant chosen per machine
    Bug("fast on a CPU is bf16 without asking the probe", "bench/core/variants.py",
        '    bf16 = device_type != "cpu" or cpu_has_native_bf16()', "    bf16 = True",
        (VARIANT, "tests/test_config.py::test_variants_differ_where_they_should")),
    Bug("the bf16 probe without oneDNN's presence", "bench/core/machine.py",
        "torch.backends.mkldnn.is_available() and torch.ops", "torch.ops",
        ("tests/test_machine.py::test_the_cpu_probe_needs_onednn_and_its_bf16_support",)),
    Bug("fast on CUDA without compile or warm-up", "bench/core/variants.py",
        'train = replace(train, compile="default", warmup_steps=3)', 'train = replace(train, compile="off", warmup_steps=0)',
        (VARIANT,)),
    # every recipe key reaching what trains
    Bug("SGD momentum fixed at 0.9", "bench/core/step.py",
        "SGD(params, lr=lr, momentum=o.momentum", "SGD(params, lr=lr, momentum=0.9", (REACH,)),
    Bug("Adam without the weight decay", "bench/core/step.py",
        "torch.optim.Adam(params, lr=lr, weight_decay=o.weight_decay", "torch.optim.Adam(params, lr=lr, weight_decay=0.0",
        (REACH,)),
    Bug("always SGD", "bench/core/step.py", 'if o.optimizer == "adam":  # foreach', "if False:  # foreach", (REACH,)),
    Bug("anneal always linear", "bench/core/step.py", "anneal_strategy=o.anneal", 'anneal_strategy="linear"', (REACH,)),
    Bug("final_div read from lr_div", "bench/core/step.py", "final_div_factor=o.final_div", "final_div_factor=o.lr_div", (REACH,)),
    Bug("pct_start fixed at 0.25", "bench/core/step.py", "pct_start=pct_start, anneal_strategy", "pct_start=0.25, anneal_strategy",
        (REACH,)),
    Bug("norm biases' weight decay not divided", "bench/core/step.py",
        '"weight_decay": cfg.optim.weight_decay / scale})', '"weight_decay": cfg.optim.weight_decay})',
        (REACH, "tests/test_step.py::test_new_step_matches_the_previous_one", "tests/test_recipe_norm.py")),
    Bug("norm_bias_lr_scale ignored", "bench/core/step.py", "    scale = cfg.optim.norm_bias_lr_scale", "    scale = 1.0",
        (REACH,)),
    Bug("norm_biases returns the scales", "bench/core/step.py",
        "return [m.bias for m in model.modules()", "return [m.weight for m in model.modules()",
        ("tests/test_recipe_norm.py::test_norm_biases_take_the_scaled_lr_and_the_divided_weight_decay",)),
    Bug("Muon's peak LR is lr_max", "bench/core/step.py",
        '    muon.param_groups[0]["lr_scale"] = o.muon_lr / o.lr_max\n    return muon',
        '    muon.param_groups[0]["lr_scale"] = 1.0\n    return muon', (REACH,)),
    Bug("Muon's momentum fixed at 0.6", "bench/core/step.py",
        "FilterMuon(filters, lr, o.muon_momentum,", "FilterMuon(filters, lr, 0.6,", (REACH,)),
    Bug("norm scales never frozen", "bench/core/train.py", "    if cfg.optim.norm_scale_frozen:", "    if False:", (REACH,)),
    Bug("Dirac initialisation ignored", "bench/core/train.py", "    if cfg.init.dirac:", "    if False:", (REACH,)),
    Bug("whiten_eps ignored", "bench/core/train.py",
        "whiten_conv_(model.prep[0], x, cfg.init.whiten_eps)", "whiten_conv_(model.prep[0], x)", (REACH,)),
    Bug("whitening from every training image", "bench/core/train.py",
        "images = data.train_images[:cfg.init.whiten_images]", "images = data.train_images", (REACH,)),
    Bug("loader batch size fixed at 512", "bench/core/train.py",
        "spec = loader_spec(cfg, t.batch_size // info.world,", "spec = loader_spec(cfg, 512 // info.world,", (REACH,)),
    Bug("evaluation start ignored", "bench/core/train.py",
        "if epoch >= min(t.eval_from, t.epochs):", "if True:", (FIT,)),
    Bug("evaluation without the recipe's TTA", "bench/core/train.py",
        "enumerate(tta_views(x, cfg.train.tta), 1)", 'enumerate(tta_views(x, "none"), 1)', (FIT,)),
    Bug("crop padding fixed at 4", "pipeline/spec.py", "crop_padding=a.crop_padding", "crop_padding=4", (REACH,)),
    Bug("flip always on", "pipeline/spec.py", "flip=a.flip,", "flip=True,", (REACH,)),
    Bug("cutout_prob dropped", "pipeline/spec.py", "cutout_prob=a.cutout_prob, ", "", (REACH,)),
    Bug("cutout always clipped", "pipeline/loaders.py", "s.cutout_prob, s.cutout_clip)", "s.cutout_prob, True)", (REACH,)),
    Bug("alternating flip ignored by the device loader", "pipeline/loaders.py",
        "if spec.flip and spec.flip_alternate else None", "if False else None", (REACH,)),
    Bug("drop_last fixed", "pipeline/spec.py", "drop_last=cfg.data.drop_last", "drop_last=True", (REACH,)),
    Bug("dropout dropped", "model/build.py",
        "norm_act_factory(model_cfg.norm, model_cfg.norm_kernel, model_cfg.dropout)",
        "norm_act_factory(model_cfg.norm, model_cfg.norm_kernel)", (REACH,)),
    Bug("logit_scale dropped", "model/build.py",
        "CustomResNet(norm_act, logit_scale=model_cfg.logit_scale)", "CustomResNet(norm_act)", (REACH,)),
    # the tests that compared a function with itself
    Bug("fast8's TTA changed while train.tta is out of is_recipe_key", "bench/core/recipes.py",
        "train=TrainConfig(epochs=8, tta=\"flip\"))", "train=TrainConfig(epochs=8, tta=\"none\"))",
        ("tests/test_provenance.py::test_each_recipe_name_still_trains_what_its_rows_trained",),
        more=(("bench/core/recipes.py", '"train.batch_size", "train.tta",', '"train.batch_size",'),)),
    # the static kernel table
    Bug("registers read from the STACK field", "bench/tools/kernel_static.py",
        'registers=field("REG")', 'registers=field("STACK")',
        (STATIC + "test_resources_reads_registers_stack_and_spills_from_their_fields",)),
    Bug("residency computed from the stack bytes", "bench/tools/kernel_static.py",
        'resident_programs(r["registers"], r["num_warps"], r["shared_bytes"],',
        'resident_programs(r["registers"], r["num_warps"], r["stack_bytes"],',
        (STATIC + "test_static_rows_take_each_column_from_the_field_it_names",)),
    Bug("the table's regs column from the stack bytes", "bench/tools/kernel_static.py",
        'r["programs_per_sm"], r["registers"],', 'r["programs_per_sm"], r["stack_bytes"],',
        (STATIC + "test_the_markdown_table_takes_each_cell_from_its_column",)),
    Bug("the read-out cache under a hand-kept suffix", "bench/tools/kernel_static.py",
        '-{sorted(options.__dict__.items())}-{readout_version()}"', '-{sorted(options.__dict__.items())}-v3"',
        (STATIC + "test_changed_readout_code_misses_the_disk_cache",
         STATIC + "test_compile_and_read_serves_the_disk_cache_only_under_todays_key")),
]


def copy_checkout(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def run_tests(repo: Path, tests, env) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                           *tests], cwd=repo, env=env, capture_output=True, text=True, timeout=1800)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    failed = [line.split(" - ", 1)[-1] for line in lines if line.startswith("FAILED ")]  # -ra's summary: the why
    return proc.returncode, time.perf_counter() - t0, (failed or lines or [""])[0 if failed else -1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help="run the bugs whose name contains this text")
    p.add_argument("--keep", action="store_true", help="keep the temporary copy")
    args = p.parse_args()
    bugs = [b for b in BUGS if args.only in b.name]
    tmp = Path(tempfile.mkdtemp(prefix="bug-check-"))
    repo = tmp / "repo"
    copy_checkout(repo)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "400"}  # untruncated failure summaries
    env.pop("TRITON_INTERPRET", None)
    data = ROOT.parent / "shared" / "data" / "cifar-10-batches-bin"
    if data.is_dir():
        env.setdefault("CIFAR10_DIR", str(data))
    where = subprocess.run([sys.executable, "-c", "import bench; print(bench.__file__)"], cwd=repo, env=env,
                           capture_output=True, text=True).stdout.strip()
    if not where.startswith(str(repo)):
        print(f"the copy imports bench from {where}, not from {repo}: stopped", file=sys.stderr)
        return 2
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    print(f"commit {commit.strip()}{' (with uncommitted changes)' if dirty else ''}; copy {repo}", flush=True)
    try:
        for b in bugs:  # every edit applies exactly once to the unmodified file
            for path, old, _ in ((b.path, b.old, b.new), *b.more):
                n = (repo / path).read_text().count(old)
                if n != 1:
                    print(f"{b.name}: the old text occurs {n} times in {path}", file=sys.stderr)
                    return 2
        tests = sorted({t for b in bugs for t in b.tests})
        rc, seconds, last = run_tests(repo, tests, env)
        print(f"without a bug: {len(tests)} test selections, rc {rc} in {seconds:.0f} s ({last})", flush=True)
        if rc != 0:
            print("the named tests do not pass without a bug: stopped", file=sys.stderr)
            return 2
        print("\n| bug | file | result | tests run | first failure | s |\n|---|---|---|---|---|---|")
        missed = 0
        for b in bugs:
            edits = ((b.path, b.old, b.new), *b.more)
            saved = {path: (repo / path).read_text() for path, _, _ in edits}
            for path, old, new in edits:
                text = (repo / path).read_text()
                (repo / path).write_text(text.replace(old, new, 1))
            try:
                rc, seconds, last = run_tests(repo, b.tests, env)
            finally:
                for path, text in saved.items():
                    (repo / path).write_text(text)
            result = "caught" if rc == 1 else "missed" if rc == 0 else f"error (pytest rc {rc})"
            missed += rc == 0
            names = ", ".join(t.replace("tests/", "").split("::")[-1] for t in b.tests)
            why = "" if rc == 0 else last.replace("|", "\\|").replace("`", "'")[:90]
            print(f"| {b.name} | `{b.path}` | {result} | {names} | {why} | {seconds:.0f} |", flush=True)
        print(f"\n{len(bugs) - missed} of {len(bugs)} caught")
        return 1 if missed else 0
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
