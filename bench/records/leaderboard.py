"""`make leaderboard`: reads only results/runs.csv and the per-epoch logs; writes leaderboard.md and plots.

Like a results checker, every row must agree with its own epoch log (the evidence) before it is ranked:
the first epoch at or above the target is the recorded one, its cumulative training time is the recorded
time to target, the totals add up. A row that cannot be read (a missing number, a line of the wrong width,
a repeated run_id) is refused with its reason; the rest still ranks. Runs that never reached the target are
listed apart, never ranked; run folders without a row (killed runs) are listed apart too.

Runs are compared only with runs of the same event (machine, recipe, profile, target, data sizes) and pooled
only under the same label, the one the run wrote into its row (`fast`, `fast+triton` for a setting overridden).
Nothing here asks today's machine what an old row meant, and today's code only for a renamed recipe's new name
(core/recipes.py): a machine is named by its row's name and facts (core/machine.py), a variant by its row's label
(records/labels.py). Each recipe and label is read as a
distribution: the share of runs that reached the target with its 95% interval, time to target as median, range and
olympic mean, accuracy per epoch as mean ± 95% interval.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from pathlib import Path

import pandas as pd

from bench.core.machine import device_heading
from bench.core.recipes import canonical_preset
from bench.core.variants import LADDER, SMOKE_TEST_IMAGES, SMOKE_TRAIN_IMAGES
from bench.records.labels import AXES, row_label
from bench.records.results import atomic_write
from bench.records.stats import mean_cell, mean_ci, olympic_mean, share_cell, speedup, wilson

REL = 1e-3  # agreement tolerance for times read back from CSV (6 significant digits are written)
EVENT = ["machine", "preset", "profile", "target_acc", "train_images", "test_images"]  # runs raced against each other
NUMERIC = ["epochs_run", "target_acc", "target_epoch", "time_to_target_s", "train_time_s", "eval_time_s",
           "warmup_s", "data_wait_s", "final_test_acc", "best_test_acc", "images_per_s", "train_images", "test_images"]
STANDARD = {"full": (50000, 10000), "smoke": (SMOKE_TRAIN_IMAGES, SMOKE_TEST_IMAGES)}  # plot names omit these sizes


class NoRuns(Exception):
    """Nothing to rank: runs.csv is missing, has no rows, or cannot be read as a whole (one line says why)."""


LOG_COLUMNS = ("epoch", "epoch_time_s", "train_time_s", "eval_time_s", "test_acc")  # what the check reads


class Unreadable(ValueError):
    """A cell the check needs is empty or not a number."""


def _close(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=REL, abs_tol=1e-3)


def _num(row, name: str) -> float:
    text = str(row.get(name) if row.get(name) is not None else "").strip()
    try:
        value = float(text)
    except ValueError:
        raise Unreadable(f"{name} is {repr(text) if text else 'empty'}, not a number") from None
    if not math.isfinite(value):
        raise Unreadable(f"{name} is {text}, not a finite number")
    return value


def _train_setting(row, key: str, default):
    """A `train.<key>` of the row's config_json (`default` for a row without one)."""
    try:
        return json.loads(row["config_json"])["train"].get(key, default)
    except (KeyError, TypeError, ValueError, AttributeError):
        return default


def _uses_tta(row) -> bool:
    """Test-time augmentation puts the deciding evaluation on the clock (bench/core/train.py)."""
    return _train_setting(row, "tta", "none") != "none"


def _empty(row, name: str) -> bool:
    return str(row.get(name) if row.get(name) is not None else "").strip() in ("", "nan")


def check_row(row, runs_dir: Path) -> str | None:
    """None when the row agrees with its epoch log, else the reason it is refused."""
    try:
        return _check(row, runs_dir)
    except Unreadable as e:
        return f"unreadable row: {e}"


def _check(row, runs_dir: Path) -> str | None:
    for name in ("run_id", "device", "preset", "profile", "variant", "status"):
        if not str(row.get(name) or "").strip() or str(row.get(name)) == "nan":
            raise Unreadable(f"{name} is empty")
    status, epochs_run, target = row["status"], int(_num(row, "epochs_run")), _num(row, "target_acc")
    log = runs_dir / str(row["run_id"]) / "epochs.csv"
    first_epoch_divergence = status == "diverged" and epochs_run == 1  # no epoch finished: no log line is owed
    if not log.is_file():
        return None if first_epoch_divergence else f"per-epoch log {log} is missing"
    try:
        ep = pd.read_csv(log)
    except pd.errors.EmptyDataError:
        ep = pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        return f"per-epoch log is not readable CSV ({str(e).splitlines()[0]})"
    if ep.empty:
        return None if first_epoch_divergence else "per-epoch log is empty"
    missing = [c for c in LOG_COLUMNS if c not in ep]
    if missing:
        return f"per-epoch log lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
    for c in LOG_COLUMNS:
        empty_allowed = c in ("test_acc", "eval_time_s")  # epochs before eval_from are not evaluated
        if not pd.api.types.is_numeric_dtype(ep[c]) or not (empty_allowed or ep[c].notna().all()):
            return f"per-epoch log has a missing or non-numeric {c} cell"
    if list(ep["epoch"]) != list(range(1, len(ep) + 1)):
        return "per-epoch log epochs are not 1..n"
    if status == "diverged":
        return None if len(ep) == epochs_run - 1 else "diverged run: epoch log length != epochs_run - 1"
    train_s, best = _num(row, "train_time_s"), _num(row, "best_test_acc")
    if len(ep) != epochs_run:
        return f"epochs_run {epochs_run} but the log has {len(ep)} epochs"
    if not _close(ep["epoch_time_s"].sum(), train_s):
        return f"train_time_s {train_s:g} != sum of epoch times {ep['epoch_time_s'].sum():.6g}"
    if not _close(ep["train_time_s"].iloc[-1], train_s):
        return "train_time_s disagrees with the log's cumulative training time"
    if not math.isclose(ep["test_acc"].max(), best, abs_tol=1e-5):
        return f"best_test_acc {best:g} != the log's best {ep['test_acc'].max():.6g}"
    final, last = _num(row, "final_test_acc"), ep["test_acc"].dropna().iloc[-1]
    if not math.isclose(last, final, abs_tol=1e-5):
        return f"final_test_acc {final:g} != the log's last evaluated accuracy {last:.6g}"
    hits = ep[ep["test_acc"] >= target]
    if status == "reached":
        target_epoch, ttt = int(_num(row, "target_epoch")), _num(row, "time_to_target_s")
        if hits.empty:
            return "recorded as reached but no epoch in the log reaches the target"
        first = hits.iloc[0]
        if int(first["epoch"]) != target_epoch:
            return f"target_epoch {target_epoch} but the log first reaches the target at epoch {int(first['epoch'])}"
        expected = first["train_time_s"] + (first["eval_time_s"] if _uses_tta(row) else 0.0)
        if not _close(expected, ttt):
            return (f"time_to_target_s {ttt:g} != {expected:.6g}, the cumulative training time"
                    f"{' plus the deciding TTA evaluation' if _uses_tta(row) else ''} at epoch {int(first['epoch'])}")
        if _train_setting(row, "stop_at_target", False) and len(ep) > target_epoch:
            return (f"the log has {len(ep)} epochs but the run stops at the target, reached at epoch "
                    f"{target_epoch}")
        return None
    if status == "not_reached":
        if not hits.empty:
            return f"recorded as not reached but epoch {int(hits.iloc[0]['epoch'])} reaches the target"
        if not (_empty(row, "target_epoch") and _empty(row, "time_to_target_s")):
            return "recorded as not reached but has a target epoch or a time to target"
        return None
    return f"unknown status {status!r}"


def read_rows(path: Path) -> tuple[list[dict], list[dict]]:
    """(rows as strings with their line number, refusals {run_id, variant, reason}) of a runs.csv."""
    if not path.is_file():
        raise NoRuns(f"no runs to rank: {path} does not exist (`make bench` or `python -m bench run` writes it)")
    try:
        return _read_rows(path)
    except UnicodeDecodeError as e:
        raise NoRuns(f"{path} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8 CSV") from None
    except csv.Error as e:
        raise NoRuns(f"{path} is not readable CSV ({e}); fix or remove the damaged line") from None
    except OSError as e:
        raise NoRuns(f"cannot read {path} ({e.strerror or e}); fix its permissions") from None


def _read_rows(path: Path) -> tuple[list[dict], list[dict]]:
    rows, bad, first_line = [], [], {}
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet program's byte-order mark
        reader = csv.DictReader(f)
        width = len(reader.fieldnames or [])
        for rec in reader:
            line, extra = reader.line_num, rec.pop(None, None)
            rid = rec.get("run_id") or f"(line {line})"
            if extra is not None or any(v is None for v in rec.values()):
                n = width + len(extra or []) - sum(v is None for v in rec.values())
                bad.append({"run_id": rid, "variant": rec.get("variant") or "",
                            "reason": f"line {line} has {n} fields, the header has {width}"})
            elif rid in first_line:
                bad.append({"run_id": rid, "variant": rec.get("variant") or "",
                            "reason": f"line {line} repeats the run_id of line {first_line[rid]} (counted once)"})
            else:
                first_line[rid] = line
                rows.append({**rec, "line": line})
    if not rows and not bad:
        raise NoRuns(f"no runs to rank: {path} has no rows yet (`make bench` appends them)")
    return rows, bad


def load(results_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(accepted rows with a 'label' column, refused rows with a 'reason' column)."""
    results_dir = Path(results_dir)
    rows, refused = read_rows(results_dir / "runs.csv")
    ok = []
    for rec in rows:
        reason = check_row(rec, results_dir / "runs")
        if reason:
            refused.append({"run_id": rec["run_id"], "variant": rec.get("variant", ""), "reason": reason})
        else:
            ok.append(rec)
    df = pd.DataFrame(ok, columns=list(rows[0]) if rows else ["run_id"])
    for name in NUMERIC + list(AXES) + EVENT + ["device", "device_facts", "label"]:
        if name not in df:
            df[name] = math.nan if name in NUMERIC else ""
    records = df.to_dict("records")
    df["label"] = [row_label(r) for r in records]
    df["preset"] = [canonical_preset(str(p)) for p in df["preset"]]  # rows of a renamed recipe rank under its name
    df["machine"] = [device_heading(str(r["device"]), "" if pd.isna(r["device_facts"]) else str(r["device_facts"]))
                     for r in records]
    for name in NUMERIC:
        df[name] = pd.to_numeric(df[name], errors="coerce")
    return df, pd.DataFrame(refused, columns=["run_id", "variant", "reason"])


def _groups(df: pd.DataFrame, keys: list[str]):
    return df.groupby(keys, dropna=False, sort=True)


def ranking(ok: pd.DataFrame) -> pd.DataFrame:
    """One row per event and label over the runs that reached the target, ranked within each event by median time.
    `runs` counts those, `tried` every accepted run of the label; `reached_lo`/`reached_hi` bound the share that
    reaches (95% Wilson); `olympic_s` drops the fastest and slowest time; `acc_mean`/`acc_ci` are the final
    accuracy's mean and 95% half-width over the runs that reached."""
    reached = ok[ok["status"] == "reached"]
    keys = EVENT + ["label"]
    cols = keys + ["rank", "runs", "tried", "reached_lo", "reached_hi", "best_s", "median_s", "worst_s", "olympic_s",
                   "median_epochs", "min_epochs", "max_epochs", "median_final_acc", "acc_mean", "acc_ci",
                   "median_images_per_s", "speedup_vs_eager"]
    if reached.empty:
        return pd.DataFrame(columns=cols)
    g = _groups(reached, keys)
    table = pd.DataFrame({"runs": g.size(), "best_s": g["time_to_target_s"].min(),
                          "median_s": g["time_to_target_s"].median(), "worst_s": g["time_to_target_s"].max(),
                          "olympic_s": g["time_to_target_s"].agg(lambda t: olympic_mean(list(t))),
                          "median_epochs": g["target_epoch"].median(),
                          "min_epochs": g["target_epoch"].min(), "max_epochs": g["target_epoch"].max(),
                          "median_final_acc": g["final_test_acc"].median(),
                          "acc_mean": g["final_test_acc"].agg(lambda a: mean_ci(list(a))[0]),
                          "acc_ci": g["final_test_acc"].agg(lambda a: mean_ci(list(a))[1]),
                          "median_images_per_s": g["images_per_s"].median()}).reset_index()
    tried = _groups(ok, keys).size().rename("tried").reset_index()
    table = table.merge(tried, on=keys, how="left")
    bounds = [wilson(int(r["runs"]), int(r["tried"])) for r in table.to_dict("records")]
    table["reached_lo"], table["reached_hi"] = [b[0] for b in bounds], [b[1] for b in bounds]
    times = {key: list(t) for key, t in g["time_to_target_s"]}
    table["speedup_vs_eager"] = [speedup(times.get(tuple(r[k] for k in EVENT) + ("eager",), []),
                                         times[tuple(r[k] for k in keys)]) for r in table.to_dict("records")]
    table = table.sort_values(EVENT + ["median_s"], na_position="last").reset_index(drop=True)
    table["rank"] = _groups(table, EVENT).cumcount() + 1
    return table[cols]


def epochs_cell(r) -> str:
    """`7` for one run or equal epochs, `7 (7-8)` otherwise."""
    spread = "" if r.min_epochs == r.max_epochs else f" ({r.min_epochs:g}-{r.max_epochs:g})"
    return f"{r.median_epochs:g}{spread}"


def _count(n) -> str:
    return "?" if pd.isna(n) else f"{int(n):,}"


def event_title(preset, profile, target, n_train, n_test) -> str:
    return (f"{preset} recipe, {profile} profile, target {100 * target:g}%, "
            f"{_count(n_train)} training / {_count(n_test)} test images")


def ladder_table(event_rows: pd.DataFrame) -> list[str]:
    """The ladder's rungs in order: img/s and time to target per rung, gains over the rung before and over eager."""
    rungs = [r for r in LADDER if (event_rows["label"] == r).any()]
    if len(rungs) < 2:
        return []
    out = ["Ladder (one change per rung; `python -m bench ladder`):", "",
           "| rung | runs | reached | time to target s (median) | img/s (median) | img/s vs rung before | "
           "time vs eager |", "|---|---|---|---|---|---|---|"]
    prev = eager_t = None
    for rung in rungs:
        sub = event_rows[event_rows["label"] == rung]
        ips = sub["images_per_s"].median()
        times = sub.loc[sub["status"] == "reached", "time_to_target_s"]
        t = times.median() if len(times) == len(sub) else math.nan  # a median only when every run reached
        eager_t = t if rung == "eager" else eager_t
        vs_prev = "-" if prev is None else f"{ips / prev:.2f}x"
        known = eager_t is not None and not math.isnan(eager_t) and not math.isnan(t)
        vs_eager = f"{eager_t / t:.2f}x" if known and rung != "eager" else "-"
        out.append(f"| {rung} | {len(sub)} | {len(times)}/{len(sub)} | {'-' if math.isnan(t) else f'{t:.1f}'} | "
                   f"{ips:,.0f} | {vs_prev} | {vs_eager} |")
        prev = ips
    return out + [""]


def epoch_curves(results_dir: Path, run_ids) -> dict[str, list[float]]:
    """Each run's test accuracy per epoch from its log (nan where an epoch was not evaluated); {} for a run without."""
    curves = {}
    for rid in run_ids:
        try:
            ep = pd.read_csv(Path(results_dir) / "runs" / str(rid) / "epochs.csv")
            curves[rid] = [float(a) for a in pd.to_numeric(ep["test_acc"], errors="coerce")]
        except (OSError, KeyError, ValueError, pd.errors.EmptyDataError):
            pass
    return curves


def accuracy_table(rows: pd.DataFrame, curves: dict[str, list[float]]) -> list[str]:
    """Test accuracy at each epoch per label, mean ± 95% interval over the runs evaluated at that epoch (runs that
    stop at the target leave later epochs to the runs still training: each cell says how many)."""
    per_label = {}
    for label, sub in _groups(rows, ["label"]):
        logs = [curves[r] for r in sub["run_id"] if r in curves]
        if len(logs) >= 2:
            per_label[label[0]] = logs
    if not per_label:
        return []
    n_epochs = max(len(log) for logs in per_label.values() for log in logs)
    out = ["Test accuracy % per epoch, mean ± 95% interval (runs):", "",
           "| variant | " + " | ".join(f"epoch {e}" for e in range(1, n_epochs + 1)) + " |",
           "|---|" + "---|" * n_epochs]
    for label, logs in per_label.items():
        cells = []
        for e in range(n_epochs):
            accs = [log[e] for log in logs if e < len(log) and not math.isnan(log[e])]
            cells.append(f"{mean_cell(accs, 100)} ({len(accs)})" if accs else "-")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out + [""]


def orphans(results_dir: Path, run_ids: set[str]) -> list[tuple[str, str]]:
    """(run_id, what its folder holds) for each runs/<id>/ without a row: runs killed before their row."""
    runs = Path(results_dir) / "runs"
    out = []
    for d in sorted(p for p in runs.iterdir() if p.is_dir() and p.name not in run_ids) if runs.is_dir() else []:
        try:
            ep = pd.read_csv(d / "epochs.csv")
            what = f"{len(ep)} epochs logged, best test acc {100 * ep['test_acc'].max():.2f}%"
        except (OSError, ValueError, KeyError, pd.errors.EmptyDataError):
            what = "no readable epoch log"
        out.append((d.name, what))
    return out


def ranked_lines(ranked: pd.DataFrame) -> list[str]:
    out = ["| rank | variant | reached / runs (95% CI) | best s | median s (range) | olympic mean s | "
           "epochs to target: median (range) | img/s | final acc % (mean ± 95% CI) | speedup vs eager |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in ranked.itertuples():
        speed = "-" if math.isnan(r.speedup_vs_eager) else f"{r.speedup_vs_eager:.2f}x"
        spread = "" if r.best_s == r.worst_s else f" ({r.best_s:.1f}-{r.worst_s:.1f})"
        acc = f"{100 * r.acc_mean:.2f}" + ("" if math.isnan(r.acc_ci) else f" ± {100 * r.acc_ci:.2f}")
        out.append(f"| {r.rank} | {r.label} | {share_cell(r.runs, r.tried)} | {r.best_s:.1f} | "
                   f"{r.median_s:.1f}{spread} | {r.olympic_s:.1f} | {epochs_cell(r)} | "
                   f"{r.median_images_per_s:,.0f} | {acc} | {speed} |")
    return out + [""]


def render(ok: pd.DataFrame, refused: pd.DataFrame, orphan_dirs: list[tuple[str, str]] = (),
           curves: dict[str, list[float]] | None = None, source: str = "results/runs.csv") -> str:
    any_ranked = False
    out = ["# Leaderboard: time to target test accuracy on CIFAR-10 (CustomResNet)", "",
           f"Generated by `python -m bench leaderboard` from {source}; every ranked row was checked against its "
           "per-epoch log. Times are training seconds to the end of the first epoch at or above the target "
           "(compilation and evaluation excluded and reported in the CSV, except that a recipe with test-time "
           "augmentation adds its deciding evaluation). Ranked per machine (its name and the facts its rows "
           "recorded) and event (recipe, profile, target, data sizes); each variant is shown by the label its rows "
           "were written with (`variant+setting` for an overridden setting). `reached / runs` counts the runs that "
           "reached the target against every run of that label, with the share's 95% Wilson interval; times, "
           "epochs and accuracies are over the runs that reached; the olympic mean drops the fastest and slowest "
           "time. Misses are listed below.", ""]
    for machine, dev_rows in _groups(ok, ["machine"]):
        out += [f"## {machine[0]}", ""]
        for event, rows in _groups(dev_rows, EVENT[1:]):
            ranked, ladder = ranking(rows), ladder_table(rows)
            any_ranked |= not ranked.empty
            if ranked.empty and not ladder:
                continue
            out += [f"### {event_title(*event)}", ""]
            if not ranked.empty:
                out += ranked_lines(ranked)
            out += ladder + accuracy_table(rows, curves or {})
    if not any_ranked:
        out += ["No run has reached its target yet.", ""]
    apart = ok[ok["status"] != "reached"]
    if not apart.empty:
        out += ["## Runs that did not reach the target (not ranked)", "",
                "| machine | preset | profile | variant | status | epochs | best acc % | target % | train s | img/s |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for r in apart.sort_values(["machine", "preset", "profile", "label"]).itertuples():
            out.append(f"| {r.machine} | {r.preset} | {r.profile} | {r.label} | {r.status} | {r.epochs_run:g} | "
                       f"{100 * r.best_test_acc:.2f} | {100 * r.target_acc:g} | {r.train_time_s:.1f} | "
                       f"{r.images_per_s:,.0f} |")
        out.append("")
    if not refused.empty:
        out += ["## Refused rows (unreadable, repeated, or disagreeing with their evidence)", "",
                "| run_id | variant | reason |", "|---|---|---|"]
        out += [f"| {r.run_id} | {r.variant} | {r.reason} |" for r in refused.itertuples()] + [""]
    if orphan_dirs:
        out += ["## Run folders without a row (runs killed or stopped before their row; not ranked)", "",
                "| run folder | evidence |", "|---|---|"]
        out += [f"| runs/{rid}/ | {what} |" for rid, what in orphan_dirs] + [""]
    return "\n".join(out)


def plot_name(machine, preset, profile, target, n_train, n_test) -> str:
    """`<machine>-<preset>-<profile>`, plus the target and sizes when they are not the profile's standard ones."""
    name = f"{machine}-{preset}-{profile}"
    if not (target == 0.9 and STANDARD.get(profile) == (n_train, n_test)):
        name += f"-target{100 * target:g}-{_count(n_train)}x{_count(n_test)}"
    return re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-").lower()


def plot(ok: pd.DataFrame, results_dir: Path, curves: dict[str, list[float]] | None = None) -> list[Path]:
    """One figure per machine and event: test accuracy against training time (one line per run) beside accuracy
    per epoch (per label: the mean over its runs, the band from the lowest to the highest run); legends by label."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    curves = epoch_curves(results_dir, ok["run_id"]) if curves is None else curves
    out_dir = Path(results_dir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for event, sub in _groups(ok, EVENT):
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5))
        colors: dict[str, str] = {}
        for r in sub.itertuples():
            log = Path(results_dir) / "runs" / r.run_id / "epochs.csv"
            if not log.is_file():
                continue  # diverged inside epoch 1: nothing to draw
            ep = pd.read_csv(log)
            color = colors.setdefault(r.label, f"C{len(colors) % 10}")
            ax.plot(ep["train_time_s"], 100 * ep["test_acc"], marker="o", ms=3, color=color,
                    label=r.label if r.label not in ax.get_legend_handles_labels()[1] else None)
        for label, rows in _groups(sub, ["label"]):
            logs = [curves[rid] for rid in rows["run_id"] if rid in curves]
            if not logs:
                continue
            n = max(len(log) for log in logs)
            acc = pd.DataFrame([log + [math.nan] * (n - len(log)) for log in logs]) * 100
            epochs = list(range(1, n + 1))
            color = colors.setdefault(label[0], f"C{len(colors) % 10}")
            ax2.plot(epochs, acc.mean(), marker="o", ms=3, color=color, label=f"{label[0]} (mean of {len(logs)})")
            if len(logs) > 1:
                ax2.fill_between(epochs, acc.min(), acc.max(), color=color, alpha=0.2)
        for a in (ax, ax2):
            a.axhline(100 * event[3], color="grey", ls="--", lw=1, label="target")
            a.grid(alpha=0.3)
            a.legend()
        ax.set(xlabel="training time (s)", ylabel="test accuracy (%)", title="each run")
        ax2.set(xlabel="epoch", ylabel="test accuracy (%)", title="per label: mean, band from lowest to highest run")
        ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.suptitle(f"{event_title(*event[1:])}\n{event[0]}")
        path = out_dir / f"{plot_name(*event)}.png"
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        atomic_write(path, buf.getvalue())  # a killed leaderboard leaves the old figure, never a 0-byte one
        paths.append(path)
    return paths


def main(results_dir: str = "results") -> int:
    root = Path(results_dir)
    try:
        ok, refused = load(root)
    except NoRuns as e:
        found = orphans(root, set())
        print(f"leaderboard: {e}" + (f"; {len(found)} run folders under {root}/runs have no row" if found else ""),
              file=sys.stderr)
        return 2
    curves = epoch_curves(root, ok["run_id"])
    text = render(ok, refused, orphans(root, set(ok["run_id"]) | set(refused["run_id"])), curves,
                  str(root / "runs.csv"))
    print(text)
    try:
        atomic_write(root / "leaderboard.md", text + "\n")
        for p in plot(ok, root, curves):
            print(f"plot: {p}")
    except OSError as e:
        print(f"leaderboard: cannot write under {root} ({e.strerror or e}); the table above is complete: free "
              f"space or make the folder writable, then run again", file=sys.stderr)
        return 2
    return 0
