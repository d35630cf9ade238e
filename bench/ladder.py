"""`python -m bench ladder` (`make bench LADDER=1`): the variant ladder, one change per rung, through the one loop.

eager (the reference) -> +device pipeline -> +bf16 -> +channels-last -> +compile -> +CUDA graphs (compile mode
reduce-overhead) -> +Triton BN+ReLU, as LADDER_STEPS in bench/core/variants.py defines them. Each rung is a named
variant raced like any other (same data, same seeds), so its row lands in runs.csv; the table printed here
and the leaderboard's show img/s and time to target per rung and what each step gained (a DAWNBench-style
ablation). On a CPU the rungs that need CUDA are skipped, each with one line saying why.
"""
from __future__ import annotations

import pandas as pd

from bench.core.config import ConfigError, RunConfig
from bench.core.distributed import env_is_main
from bench.core.train import RunResult
from bench.core.variants import LADDER, NEEDS_CUDA
from bench.race import race
from bench.records.leaderboard import ladder_table


def runnable(rungs: list[str], device_type: str) -> tuple[list[str], list[str]]:
    """(the asked rungs in ladder order without those this device type cannot run, one line for each skipped);
    the lines are printed once every check has passed, so that a refusal is the only line a bad input gives."""
    unknown = [r for r in rungs if r not in LADDER]
    if unknown or not rungs:
        raise ConfigError(f"--rungs: {', '.join(unknown) or 'none given'}; the rungs are {','.join(LADDER)}")
    keep, skipped = [], []
    for rung in sorted(set(rungs), key=LADDER.index):
        if device_type != "cuda" and rung in NEEDS_CUDA:
            skipped.append(f"ladder: {rung} skipped on this {device_type}: {NEEDS_CUDA[rung]}")
        else:
            keep.append(rung)
    if not keep:
        raise ConfigError(f"no rung of --rungs={','.join(rungs)} can run on a {device_type}")
    return keep, skipped


def results_frame(results: dict[str, list[RunResult]]) -> pd.DataFrame:
    """The race's results as the leaderboard's rows (label, status, img/s, time to target)."""
    return pd.DataFrame([{"label": rung, "status": r.status, "images_per_s": r.images_per_s,
                          "time_to_target_s": r.time_to_target_s} for rung, rs in results.items() for r in rs],
                        columns=["label", "status", "images_per_s", "time_to_target_s"])


def ladder(cfgs: list[RunConfig], runs: int, tensorboard: bool = False,
           full: dict[str, RunConfig] | None = None) -> dict:
    """Race the rungs' configs (built from the rungs `runnable` kept), then print the ladder table."""
    results = race(cfgs, runs, tensorboard=tensorboard, full=full)
    if env_is_main():
        print("\n".join(ladder_table(results_frame(results))) or "(one rung ran: no ladder to show)")
    return results
