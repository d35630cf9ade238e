"""Command line: `python -m bench <command> [--preset=..] [--variant=..] [--profile=..] [--key=value ...]`.

Any `--key=value` that is not an option of the command is a config override (`--train.epochs=5`, or a
bare leaf name such as `--epochs=5` when it is unambiguous); an unknown key is an error. Options are not
abbreviated (`--lr=1` is an unknown key, not `--lr-from-finder`). Options are spelled with dashes and config keys with
underscores; the other spelling is read too, with a note naming the one to write.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import signal
import sys
import threading
from pathlib import Path

from pipeline.cifar10 import DataError
from pipeline.dali import DaliUnavailable

from bench.config_help import keys_epilog
from bench.core.config import TRAIN_IMAGES, ConfigError, RunConfig, resolve_key
from bench.core.distributed import env_is_main, shutdown
from bench.core.machine import cpu_has_native_bf16, default_device_type
from bench.core.recipes import RECIPES
from bench.core.variants import LADDER, SMOKE_EPOCHS, SMOKE_TEST_IMAGES, SMOKE_TRAIN_IMAGES, build_config
from bench.preflight import MissingPackage, preflight
from bench.records.results import ResultsError

SMOKE_NOTE = (f"no CUDA device: running the smoke profile (real data, {SMOKE_TRAIN_IMAGES:,} training images, "
              f"{SMOKE_EPOCHS} epoch{'s' if SMOKE_EPOCHS > 1 else ''}, {SMOKE_TEST_IMAGES:,} test images); "
              f"`make bench PROFILE=full` runs the full race to 90% here (hours on a CPU)")
MAX_STEPS = 10_000  # a tool's timed or profiled steps
MAX_BATCH = TRAIN_IMAGES  # the training split: no batch is larger
MAX_RUNS = 10_000  # repeats per variant: a typo's extra zeros should not start a month of training
LABELS = ("preset", "variant", "profile")  # chosen by options, recorded in the row: never overridden


def parse_overrides(extra: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    given: dict[str, str] = {}  # resolved key -> the argument that set it
    for arg in extra:
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"unexpected argument {arg!r}; config overrides are written --key=value")
        key, value = arg[2:].split("=", 1)
        key = key.replace("-", "_")
        if key in LABELS:
            raise ConfigError(f"--{key} is not an option of this command (race takes --variants=eager,fast; "
                              f"run, lr-find and show-config take --variant)")
        resolved = resolve_key(key)
        if resolved in given:  # the last would win silently: the row would not say which the user meant
            raise ConfigError(f"{resolved} is given twice ({given[resolved]} and {arg}): give it once")
        given[resolved] = arg
        out[resolved] = value
    return out


def comma_list(option: str, text: str) -> list[str]:
    """`a,b` -> ['a', 'b']; a name twice is refused (the same seed would run twice and be pooled as two runs)."""
    names = [v for v in text.split(",") if v]
    twice = sorted({v for v in names if names.count(v) > 1})
    if twice:
        raise ConfigError(f"{option}={text} names {', '.join(twice)} twice: name each once "
                          f"(--runs=N repeats each with seeds seed..seed+N-1)")
    return names


def tool_results_dir(path: str) -> str:
    """A tool's --results-dir, checked before the benchmark runs and without creating it (the tool's own checks
    come later): `~` expanded; a file in the way, or a folder that cannot be written, refused in one line (else the
    tool would fail after its work, when it writes)."""
    if not path.strip():
        raise ConfigError("--results-dir is empty: give a folder, e.g. --results-dir=results")
    path = os.path.expanduser(path)
    existing = next(p for p in (Path(path).absolute(), *Path(path).absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ResultsError(f"results folder {path}: {existing} is a file, not a folder: pass --results-dir=<a folder>")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ResultsError(f"cannot write in results folder {existing}: make it writable or pass "
                           f"--results-dir=<a writable folder>")
    return path


def auto_profile(profile: str) -> str:
    """'auto' -> full on CUDA, smoke otherwise (the note saying so is printed once the command is accepted)."""
    if profile != "auto":
        return profile
    return "full" if default_device_type() == "cuda" else "smoke"


def _refuse(kind: str, e: BaseException) -> int:
    if env_is_main():  # every torchrun rank refuses the same input; one line is enough
        print(f"{kind}: {e}", file=sys.stderr)
    return 2


def _stopped(how: str, e: BaseException) -> None:
    """One line on what a stop left: a run stopped while drawing its report has its row already."""
    if not env_is_main():
        return
    run_id = getattr(e, "recorded_run", None)
    if run_id:
        print(f"{how} while writing the report of run {run_id}: its row is in runs.csv; the report may be "
              f"incomplete: `make report RUN={run_id}` rebuilds it", file=sys.stderr)
    else:
        print(f"{how}: the unfinished run wrote no row; rows already written are intact", file=sys.stderr)


class Terminated(BaseException):
    """SIGTERM (`kill`, a scheduler's time limit): unwinds like Ctrl-C, so nothing half-written is left."""


def _terminate(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    main_thread = threading.current_thread() is threading.main_thread()  # signals install there only
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return _main(argv)
    except ConfigError as e:
        return _refuse("config error", e)
    except ResultsError as e:
        return _refuse("results error", e)
    except DataError as e:  # missing, unreadable or corrupt data: say what to do
        return _refuse("data error", e)
    except (DaliUnavailable, MissingPackage) as e:
        return _refuse("missing package", e)
    except KeyboardInterrupt as e:
        _stopped("interrupted (Ctrl-C)", e)
        return 130
    except Terminated as e:
        _stopped("terminated (SIGTERM)", e)
        return 143
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        shutdown()  # leave a torchrun process group cleanly


OTHER_SPELLING: dict[str, str] = {}  # `--a_b` -> `--a-b` for every option _option declares


def _option(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """`--a-b`, its one spelling, and `--a_b` read as it with a note (config keys are written with underscores)."""
    under = "--" + name[2:].replace("-", "_")
    if under != name:
        OTHER_SPELLING[under] = name
    parser.add_argument(*dict.fromkeys((name, under)), **kwargs)


def spelling_notes(argv: list[str], extra: list[str]) -> list[str]:
    """One note per flag written in its other spelling: options take dashes (`--results-dir`), config keys
    underscores (`--batch_size`); both spellings are read, and the note names the one to write."""
    notes = []
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if arg in extra:
            if flag.startswith("--") and "-" in flag[2:]:
                notes.append(f"note: {flag} is written --{flag[2:].replace('-', '_')} (a config key); read as that")
        elif flag in OTHER_SPELLING:
            notes.append(f"note: {flag} is written {OTHER_SPELLING[flag]}; read as that")
    return list(dict.fromkeys(notes))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True,
                                parser_class=functools.partial(argparse.ArgumentParser, allow_abbrev=False))
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    recipes = " | ".join(f"{name} ({make().train.epochs} epochs)" for name, make in RECIPES.items())
    common.add_argument("--preset", default="seed", help=f"recipe: {recipes}")
    common.add_argument("--profile", default="auto", help="full | smoke | auto (full on CUDA, smoke otherwise)")
    run = sub.add_parser("run", parents=[common], help="train one configuration and record its row")
    run.add_argument("--variant", default=None, help="eager | fast (default: the preset as it is)")
    run.add_argument("--runs", type=int, default=1, help="repeats (seeds seed, seed+1, ...), then a table")
    _option(run, "--lr-from-finder", action="store_true", help="run the LR range test first, take lr_max from it")
    rc = sub.add_parser("race", parents=[common], help="variants side by side, then a table")
    rc.add_argument("--variants", default="eager,fast")
    rc.add_argument("--runs", type=int, default=1, help="repeats per variant (seeds seed, seed+1, ...)")
    _option(rc, "--lr-from-finder", action="store_true", help="run the LR range test first, take lr_max from it")
    lf = sub.add_parser("lr-find", parents=[common], help="LR range test -> suggestion, plot, results/lr_find.csv")
    lf.add_argument("--variant", default=None)
    _option(lf, "--start-lr", type=float, default=1e-7)
    _option(lf, "--end-lr", type=float, default=10.0)
    _option(lf, "--num-iter", type=int, default=200)
    lf.add_argument("--mode", default="exp", choices=["exp", "linear"])
    rp = sub.add_parser("report", help="rebuild results/runs/<run_id>/ report figures")
    rp.add_argument("run_id")
    _option(rp, "--results-dir", default="results")
    pb = sub.add_parser("pipeline-bench", help="images/s of each pipeline, each under a time cap -> results/pipeline.csv")
    _option(pb, "--results-dir", default="results")
    pb.add_argument("--pipelines", default="device,dali,dataloader", help="comma list (dali where installed)")
    pb.add_argument("--rounds", type=int, default=3, help="epochs per pipeline at most")
    _option(pb, "--time-cap-s", type=float, default=20.0, help="seconds per pipeline at most (warm-up apart)")
    _option(pb, "--train-subset", type=int, default=0, help="first N training images (0: all 50,000)")
    ld = sub.add_parser("ladder", parents=[common], help="eager -> +device -> +bf16 -> +channels-last -> +compile -> "
                        "+CUDA graphs -> +Triton BN+ReLU, one variant per rung, then a table")
    ld.add_argument("--rungs", dest="variants", metavar="RUNGS", default=",".join(LADDER),
                    help="comma list of rungs")
    ld.add_argument("--runs", type=int, default=1, help="repeats per rung (seeds seed, seed+1, ...)")
    for recorded in (run, rc, ld):  # a recording choice, like the results folder: not in the config or the label
        recorded.add_argument("--tensorboard", action="store_true", help="also write a TensorBoard event file in "
                              "results/runs/<run_id>/tensorboard/ (per-step loss and LR, per-epoch accuracy)")
    for checked in (run, rc, lf, ld):  # every command that trains
        _option(checked, "--dry-run", action="store_true", help="the checks only: exit 0 if the command would "
                "start, else its one-line refusal (with WORLD_SIZE=N set, as a torchrun launch would see it)")
    _tool_commands(sub, common)
    keys = keys_epilog()
    for name, command in sub.choices.items():
        command.formatter_class = HelpFormatter
        for action in command._actions:
            if action.option_strings and action.help is None:
                action.help = OPTION_HELP[action.option_strings[0]]
        if name in ("run", "race", "ladder", "lr-find", "show-config", "profile"):  # the commands taking overrides
            command.epilog = keys
    return parser


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Epilogs as written (the config keys, one per line), and each option's default after its help."""


OPTION_HELP = {  # options declared without help text: one line each, the default is added by HelpFormatter
    "--variants": "comma list of variants to race (eager | fast | a ladder rung)",
    "--variant": "eager | fast | a ladder rung (none: the preset as it is)",
    "--preset": f"recipe: {' | '.join(RECIPES)}",
    "--start-lr": "smallest LR of the range test",
    "--end-lr": "largest LR of the range test",
    "--num-iter": "steps of the range test",
    "--mode": "LR spacing of the range test",
    "--results-dir": "folder of the results CSVs and run folders",
    "--batch-sizes": "comma list of batch sizes",
    "--dtypes": "comma list: fp32, bf16",
    "--layouts": "comma list: channels_last, nchw",
}


def _tool_commands(sub, common: argparse.ArgumentParser) -> None:
    """The benchmarks and tools that train no recipe to the target."""
    sb = sub.add_parser("step-bench", help="ms/step of the previous and the new training step -> results/step.csv")
    _option(sb, "--results-dir", default="results")
    _option(sb, "--batch-sizes", default="512,16")
    sb.add_argument("--steps", type=int, default=0, help="timed steps per row (0: 20 on CUDA, 3-10 on a CPU)")
    _option(sb, "--compile-modes", default="", help="comma list for the new step (default: off,default[,reduce-overhead])")
    kb = sub.add_parser("kernel-bench", help="fused BN+ReLU vs eager/compiled on CUDA -> results/kernels.csv")
    _option(kb, "--results-dir", default="results")
    kb.add_argument("--dtypes", default="fp32,bf16")
    kb.add_argument("--layouts", default="channels_last,nchw")
    _option(sub.add_parser("kernel-static", help="compile the Triton kernels for sm_80/sm_90 on this CPU -> "
                           "results/kernels_static.csv"), "--results-dir", default="results")
    _option(sub.add_parser("leaderboard", help="results/runs.csv -> results/leaderboard.md and plots"),
            "--results-dir", default="results")
    cf = sub.add_parser("choose-fast", help="measure img/s of each precision/layout/compile setting -> results/variants.csv")
    _option(cf, "--results-dir", default="results")
    cf.add_argument("--steps", type=int, default=4, help="timed steps per candidate")
    _option(cf, "--batch-size", type=int, default=512, help="images per step (the recipes' 512)")
    _option(cf, "--compile-modes", default="", help="comma list; default off,default (+max-autotune on CUDA)")
    pf = sub.add_parser("profile", help="torch.profiler over N warm steps of a variant -> results/profiles/<id>/")
    pf.add_argument("--preset", default="fast4")
    pf.add_argument("--variant", default="fast")
    pf.add_argument("--steps", type=int, default=3, help="profiled steps")
    pf.add_argument("--warmup", type=int, default=2, help="steps before profiling (compilation, capture)")
    _option(pf, "--results-dir", default="results")
    sub.add_parser("show-config", parents=[common], help="print the resolved config as JSON").add_argument(
        "--variant", default=None)


def _no_extra(command: str, extra: list[str], takes: str) -> None:
    if extra:
        raise ConfigError(f"{command} takes {takes} only, not {' '.join(extra)}")


def _pipeline_bench(args, extra: list[str]) -> int:
    from bench.tools.pipeline_bench import main as pipeline_bench
    _no_extra("pipeline-bench", extra, "--pipelines, --rounds, --time-cap-s, --train-subset and --results-dir")
    return pipeline_bench(tool_results_dir(args.results_dir), args.pipelines, args.rounds, args.time_cap_s, args.train_subset)


def _step_bench(args, extra: list[str]) -> int:
    from bench.tools.step_bench import main as step_bench
    if extra or not 0 <= args.steps <= MAX_STEPS:
        raise ConfigError(f"step-bench takes --batch-sizes, --steps in [0, {MAX_STEPS}], --compile-modes and "
                          f"--results-dir only")
    return step_bench(tool_results_dir(args.results_dir), args.batch_sizes, args.steps, compile_modes=args.compile_modes)


def _report(args, extra: list[str]) -> int:
    from bench.records.report import report_for_run
    _no_extra("report", extra, "a run id and --results-dir")
    report_for_run(args.run_id, args.results_dir)
    return 0


def _choose_fast(args, extra: list[str]) -> int:
    from bench.tools.choose import main as choose_fast
    if extra or not 1 <= args.steps <= MAX_STEPS or not 1 <= args.batch_size <= MAX_BATCH // args.steps:
        raise ConfigError(f"choose-fast takes --steps in [1, {MAX_STEPS}], --batch-size with steps x batch at most "
                          f"{MAX_BATCH:,} images, --compile-modes and --results-dir only")
    return choose_fast(tool_results_dir(args.results_dir), args.steps,
                       [m for m in args.compile_modes.split(",") if m] or None, args.batch_size)


def _kernel_static(args, extra: list[str]) -> int:
    from bench.tools.kernel_static import main as kernel_static
    return kernel_static(tool_results_dir(args.results_dir), extra)  # its own options (--targets, --dtypes, ...) are parsed there


def _kernel_bench(args, extra: list[str]) -> int:
    from bench.tools.kernel_bench import main as kernel_bench
    _no_extra("kernel-bench", extra, "--dtypes, --layouts and --results-dir")
    return kernel_bench(tool_results_dir(args.results_dir), args.dtypes, args.layouts)


def _leaderboard(args, extra: list[str]) -> int:
    from bench.records.leaderboard import main as leaderboard
    _no_extra("leaderboard", extra, "--results-dir")
    return leaderboard(args.results_dir)


def _profile(args, extra: list[str]) -> int:
    overrides = parse_overrides(extra)
    if not (1 <= args.steps <= MAX_STEPS and 0 <= args.warmup <= MAX_STEPS):
        raise ConfigError(f"profile needs --steps in [1, {MAX_STEPS}] and --warmup in [0, {MAX_STEPS}]")
    build_config(args.preset, args.variant, "full", overrides)  # a bad recipe or key: refused before any work
    results_dir = tool_results_dir(args.results_dir)
    from bench.tools.step_profile import main as profile_main
    return profile_main(args.preset, args.variant, args.steps, args.warmup, overrides, results_dir)


def run_device_type(preset: str, profile: str, overrides: dict[str, str]) -> str:
    """cpu or cuda: the device type `train.device` will resolve to (auto: CUDA where there is one), which decides
    what a variant sets; decided once here, so the configs checked are the configs that train."""
    name = build_config(preset, None, profile, overrides).train.device
    return default_device_type() if name == "auto" else name.split(":")[0]


def _show_config(args, extra: list[str]) -> int:
    overrides, profile = parse_overrides(extra), auto_profile(args.profile)
    cfg = build_config(args.preset, args.variant, profile, overrides, run_device_type(args.preset, profile, overrides))
    print(json.dumps(json.loads(cfg.to_json()), indent=2))  # one key per line: read by people, parsed as JSON
    return 0


def _training(args, extra: list[str]) -> int:
    """run, race, ladder and lr-find: configs, every check (or the dry run's verdict), then the command."""
    overrides = parse_overrides(extra)
    profile = auto_profile(args.profile)
    device_type = run_device_type(args.preset, profile, overrides)
    many = args.command in ("race", "ladder")
    variants = comma_list("--variants" if args.command == "race" else "--rungs", args.variants) if many \
        else [args.variant]
    notes = list(args.spelling)  # said once every check has passed
    if args.command == "ladder":
        from bench.ladder import runnable
        variants, skipped = runnable(variants, device_type)  # rungs that need CUDA skipped on a CPU, one line each
        notes += skipped
    cfgs = [build_config(args.preset, v, profile, overrides, device_type) for v in variants]
    if (many or repeated_run(args)) and not 1 <= args.runs <= MAX_RUNS:
        raise ConfigError(f"{args.command} needs --runs in [1, {MAX_RUNS}] (got {args.runs})")
    if not variants:
        raise ConfigError(f"{args.command} needs at least one of --variants=eager,fast")
    if args.command == "lr-find" and (args.num_iter < 2 or not 0 < args.start_lr < args.end_lr < math.inf):
        raise ConfigError("lr-find needs --num-iter >= 2 and 0 < --start-lr < --end-lr, both finite")
    finder = None
    if getattr(args, "lr_from_finder", False):
        finder = build_config(args.preset, getattr(args, "variant", None) or "fast", "full", overrides, device_type)
        preflight([finder], "lr_find.csv")
    preflight(cfgs, "lr_find.csv" if args.command == "lr-find" else "runs.csv")
    notes += [slow_precision_note(cfgs, device_type)]  # said by the dry run too (after its verdict): what the run does
    notes = [n for n in notes if n]
    if args.dry_run:
        print(f"checks passed: {args.command} would start ({', '.join(f'{c.preset}/{c.variant}' for c in cfgs)})")
        if notes:
            print("\n".join(notes))
        return 0
    if notes and env_is_main():
        print("\n".join(notes), flush=True)  # stdout, as the smoke note: stderr keeps to refusals and errors
    if args.profile == "auto" and profile == "smoke" and env_is_main():
        print(SMOKE_NOTE, flush=True)
    if finder is not None:
        from bench.tools.lr_find import finder_overrides, run_finder
        overrides = {**overrides, **finder_overrides(run_finder(finder))}
        cfgs = [build_config(args.preset, v, profile, overrides, device_type) for v in variants]
    return _start(args, cfgs, variants, profile, overrides, device_type)


def repeated_run(args) -> bool:
    """`run --runs=N` with N != 1: the race of one variant (lr-find has no --runs)."""
    return args.command == "run" and args.runs != 1


def slow_precision_note(cfgs, device_type: str) -> str:
    """One line when a run without a variant trains in bf16 on a CPU that has no native bf16 ('' otherwise)."""
    if device_type != "cpu" or not any(c.variant == "custom" and c.train.precision == "bf16" for c in cfgs):
        return ""
    if cpu_has_native_bf16():
        return ""
    return ("note: without --variant the recipe trains in bf16, which this CPU has no native support for (about "
            "13x slower than fp32 here); --variant=fast trains it in fp32 channels-last")


def _start(args, cfgs, variants: list[str], profile: str, overrides: dict[str, str], device_type: str) -> int:
    def full() -> dict[str, RunConfig] | None:
        """After a smoke race: each variant's full-profile config, for the estimate of the full race."""
        if profile != "smoke":
            return None
        return {c.variant: build_config(args.preset, v, "full", overrides, device_type) for c, v in zip(cfgs, variants)}
    if args.command == "ladder":
        from bench.ladder import ladder
        ladder(cfgs, args.runs, tensorboard=args.tensorboard, full=full())
    elif args.command == "race" or repeated_run(args):
        from bench.race import race
        race(cfgs, args.runs, tensorboard=args.tensorboard, full=full())
    elif args.command == "lr-find":
        from bench.tools.lr_find import run_finder
        run_finder(cfgs[0], args.start_lr, args.end_lr, args.num_iter, args.mode)
    else:
        from bench.run import train
        train(cfgs[0], tensorboard=args.tensorboard)
    return 0


TRAINING = ("run", "race", "ladder", "lr-find")  # they say spelling notes with their others, before training
COMMANDS = {"pipeline-bench": _pipeline_bench, "step-bench": _step_bench, "report": _report,
            "choose-fast": _choose_fast, "kernel-static": _kernel_static, "kernel-bench": _kernel_bench,
            "leaderboard": _leaderboard, "profile": _profile, "show-config": _show_config,
            **{name: _training for name in TRAINING}}


def _main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, extra = _parser().parse_known_args(argv)
    args.spelling = spelling_notes(argv, extra)  # said once the command is accepted, never before a refusal
    rc = COMMANDS[args.command](args, extra)
    if rc == 0 and args.spelling and args.command not in TRAINING + ("show-config",):  # its output is JSON
        print("\n".join(args.spelling))
    return rc
