"""`make leaderboard`: reads only results/runs.csv and the per-epoch logs; writes leaderboard.md and plots.

Like a results checker, every row must agree with its own epoch log (the evidence) before it is ranked:
the first epoch at or above the target is the recorded one, its cumulative training time is the recorded
time to target, the totals add up. Runs that never reached the target are listed apart, never ranked.
Rankings are per device: a device's name heads its own table.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd

from .results import atomic_write

REL = 1e-3  # agreement tolerance for times read back from CSV (6 significant digits are written)


def _close(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=REL, abs_tol=1e-3)


def _uses_tta(row: pd.Series) -> bool:
    """Test-time augmentation puts the deciding evaluation on the clock (bench/train.py)."""
    try:
        return json.loads(row["config_json"])["train"].get("tta", "none") != "none"
    except (KeyError, TypeError, ValueError):
        return False


def check_row(row: pd.Series, runs_dir: Path) -> str | None:
    """None when the row agrees with its epoch log, else the reason it is refused."""
    log = runs_dir / str(row["run_id"]) / "epochs.csv"
    if not log.is_file():
        return f"per-epoch log {log} is missing"
    ep = pd.read_csv(log)
    if ep.empty:
        return "per-epoch log is empty"
    if list(ep["epoch"]) != list(range(1, len(ep) + 1)):
        return "per-epoch log epochs are not 1..n"
    status = row["status"]
    if status == "diverged":
        return None if len(ep) == int(row["epochs_run"]) - 1 else "diverged run: epoch log length != epochs_run - 1"
    if len(ep) != int(row["epochs_run"]):
        return f"epochs_run {row['epochs_run']} but the log has {len(ep)} epochs"
    if not _close(ep["epoch_time_s"].sum(), row["train_time_s"]):
        return f"train_time_s {row['train_time_s']} != sum of epoch times {ep['epoch_time_s'].sum():.6g}"
    if not _close(ep["train_time_s"].iloc[-1], row["train_time_s"]):
        return "train_time_s disagrees with the log's cumulative training time"
    if not math.isclose(ep["test_acc"].max(), float(row["best_test_acc"]), abs_tol=1e-5):
        return f"best_test_acc {row['best_test_acc']} != the log's best {ep['test_acc'].max():.6g}"
    hits = ep[ep["test_acc"] >= float(row["target_acc"])]
    if status == "reached":
        if hits.empty:
            return "recorded as reached but no epoch in the log reaches the target"
        first = hits.iloc[0]
        if int(first["epoch"]) != int(row["target_epoch"]):
            return f"target_epoch {row['target_epoch']} but the log first reaches the target at epoch {int(first['epoch'])}"
        expected = first["train_time_s"] + (first["eval_time_s"] if _uses_tta(row) else 0.0)
        if not _close(expected, row["time_to_target_s"]):
            return (f"time_to_target_s {row['time_to_target_s']} != {expected:.6g}, the cumulative training time"
                    f"{' plus the deciding TTA evaluation' if _uses_tta(row) else ''} at epoch {int(first['epoch'])}")
        return None
    if status == "not_reached":
        if not hits.empty:
            return f"recorded as not reached but epoch {int(hits.iloc[0]['epoch'])} reaches the target"
        return None
    return f"unknown status {status!r}"


def load(results_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(accepted rows, refused rows with a 'reason' column)."""
    path = results_dir / "runs.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `make bench` first")
    df = pd.read_csv(path)
    df["reason"] = [check_row(r, results_dir / "runs") for _, r in df.iterrows()]
    return df[df["reason"].isna()].drop(columns="reason"), df[df["reason"].notna()]


def ranking(ok: pd.DataFrame) -> pd.DataFrame:
    """One row per (device, preset, profile, variant) over the runs that reached the target."""
    reached = ok[ok["status"] == "reached"]
    keys = ["device", "preset", "profile", "variant"]
    if reached.empty:
        return pd.DataFrame(columns=keys + ["runs", "best_s", "median_s", "median_epochs", "min_epochs",
                                            "max_epochs", "median_final_acc", "speedup_vs_eager"])
    g = reached.groupby(keys)
    table = pd.DataFrame({"runs": g.size(), "best_s": g["time_to_target_s"].min(),
                          "median_s": g["time_to_target_s"].median(), "median_epochs": g["target_epoch"].median(),
                          "min_epochs": g["target_epoch"].min(), "max_epochs": g["target_epoch"].max(),
                          "median_final_acc": g["final_test_acc"].median()}).reset_index()
    eager = table[table["variant"] == "eager"].set_index(["device", "preset", "profile"])["median_s"]
    table["speedup_vs_eager"] = [
        eager.get((r.device, r.preset, r.profile), float("nan")) / r.median_s for r in table.itertuples()]
    return table.sort_values(["device", "preset", "profile", "median_s"]).reset_index(drop=True)


def epochs_cell(r) -> str:
    """`7` for one run or equal epochs, `7 (7-8)` otherwise."""
    spread = "" if r.min_epochs == r.max_epochs else f" ({r.min_epochs:g}-{r.max_epochs:g})"
    return f"{r.median_epochs:g}{spread}"


def render(ok: pd.DataFrame, refused: pd.DataFrame) -> str:
    rank = ranking(ok)
    out = ["# Leaderboard: time to target test accuracy on CIFAR-10 (CustomResNet)", "",
           "Generated by `make leaderboard` from results/runs.csv; every ranked row was checked against its "
           "per-epoch log. Times are training seconds to the end of the first epoch at or above the target "
           "(compilation and evaluation excluded and reported in the CSV, except that a recipe with test-time "
           "augmentation adds its deciding evaluation). Ranked per device; the epochs column compares recipes.",
           ""]
    for device, sub in rank.groupby("device", sort=True):
        out += [f"## {device}", "", "| rank | preset | profile | variant | runs | best s | median s | "
                "epochs to target: median (range) | median final acc % | speedup vs eager |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for i, r in enumerate(sub.itertuples(), 1):
            speed = "-" if math.isnan(r.speedup_vs_eager) else f"{r.speedup_vs_eager:.2f}x"
            out.append(f"| {i} | {r.preset} | {r.profile} | {r.variant} | {r.runs} | {r.best_s:.1f} | "
                       f"{r.median_s:.1f} | {epochs_cell(r)} | {100 * r.median_final_acc:.2f} | {speed} |")
        out.append("")
    if rank.empty:
        out += ["No run has reached its target yet.", ""]
    apart = ok[ok["status"] != "reached"]
    if not apart.empty:
        out += ["## Runs that did not reach the target (not ranked)", "",
                "| device | preset | profile | variant | status | epochs | best acc % | target % | train s | img/s |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for r in apart.sort_values(["device", "preset", "profile", "variant"]).itertuples():
            out.append(f"| {r.device} | {r.preset} | {r.profile} | {r.variant} | {r.status} | {r.epochs_run} | "
                       f"{100 * r.best_test_acc:.2f} | {100 * r.target_acc:.1f} | {r.train_time_s:.1f} | "
                       f"{r.images_per_s:,.0f} |")
        out.append("")
    if not refused.empty:
        out += ["## Refused rows (disagree with their evidence)", "", "| run_id | variant | reason |", "|---|---|---|"]
        for r in refused.itertuples():
            out.append(f"| {r.run_id} | {r.variant} | {r.reason} |")
        out.append("")
    return "\n".join(out)


def plot(ok: pd.DataFrame, results_dir: Path) -> list[Path]:
    """Test accuracy against training time, one figure per (device, preset, profile), one line per run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = results_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for (device, preset, profile), sub in ok.groupby(["device", "preset", "profile"]):
        fig, ax = plt.subplots(figsize=(8, 5))
        colors = {}
        for r in sub.itertuples():
            ep = pd.read_csv(results_dir / "runs" / r.run_id / "epochs.csv")
            color = colors.setdefault(r.variant, f"C{len(colors)}")
            ax.plot(ep["train_time_s"], 100 * ep["test_acc"], marker="o", ms=3, color=color,
                    label=r.variant if r.variant not in ax.get_legend_handles_labels()[1] else None)
        ax.axhline(100 * sub["target_acc"].iloc[0], color="grey", ls="--", lw=1, label="target")
        ax.set(xlabel="training time (s)", ylabel="test accuracy (%)", title=f"{preset} / {profile}\n{device}")
        ax.grid(alpha=0.3)
        ax.legend()
        slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{device}-{preset}-{profile}").strip("-").lower()
        path = out_dir / f"{slug}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def main(results_dir: str = "results") -> int:
    root = Path(results_dir)
    ok, refused = load(root)
    text = render(ok, refused)
    atomic_write(root / "leaderboard.md", text + "\n")
    print(text)
    for p in plot(ok, root):
        print(f"plot: {p}")
    return 0
