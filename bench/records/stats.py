"""The statistics a speed-run record is read by: the share of runs that reached the target with its 95% interval,
time to target as a median and an MLPerf-style olympic mean, and a mean with its 95% interval.

Wilson's score interval for a share (it stays inside [0, 1] and is not degenerate at 0 or n successes, unlike the
normal approximation), Student's t for a mean over few runs.
"""
from __future__ import annotations

import math
import statistics

Z95 = 1.959963984540054  # two-sided 95% normal quantile
# two-sided 95% Student t quantiles by degrees of freedom 1..30; above 30 the normal quantile is within 4%
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
       2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a share of k successes in n trials; (0, 1) for n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (0.0 if k == 0 else centre - half), (1.0 if k == n else centre + half)  # exact at the ends


def olympic_mean(values: list[float]) -> float:
    """The mean with the fastest and the slowest dropped (MLPerf's rule); the plain mean under 3 values."""
    xs = sorted(values)
    if not xs:
        return math.nan
    return statistics.fmean(xs[1:-1] if len(xs) >= 3 else xs)


def mean_ci(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of its 95% t interval); the half-width is nan for one value."""
    xs = [v for v in values if not math.isnan(v)]
    if not xs:
        return math.nan, math.nan
    if len(xs) == 1:
        return xs[0], math.nan
    df = len(xs) - 1
    t = T95[df - 1] if df <= len(T95) else Z95
    return statistics.fmean(xs), t * statistics.stdev(xs) / math.sqrt(len(xs))


def speedup(base: list[float], times: list[float]) -> float:
    """How many times faster `times` are than `base`: the ratio of their medians (nan where either is empty).
    The one definition the race table and the leaderboard both print."""
    if not base or not times:
        return math.nan
    return statistics.median(base) / statistics.median(times)


def share_cell(k: int, n: int) -> str:
    """`3/3 (44-100%)`: reached of tried, with the share's 95% Wilson interval."""
    lo, hi = wilson(k, n)
    return f"{k}/{n} ({100 * lo:.0f}-{100 * hi:.0f}%)"


def median_spread(values: list[float]) -> str:
    """`12.0 (10.0-14.0)`: the median and the range, the median alone for one value, '-' for none."""
    if not values:
        return "-"
    spread = f" ({min(values):.1f}-{max(values):.1f})" if len(values) > 1 else ""
    return f"{statistics.median(values):.1f}{spread}"


def time_cells(times: list[float]) -> tuple[str, str]:
    """(`median (min-max)`, olympic mean) of times to target, '-' where there are none."""
    if not times:
        return "-", "-"
    return median_spread(times), f"{olympic_mean(times):.1f}"


def mean_cell(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """`91.62 ± 0.33` (mean ± 95% half-width), the mean alone for one value, '-' for none."""
    mean, half = mean_ci(values)
    if math.isnan(mean):
        return "-"
    return f"{scale * mean:.{digits}f}" + ("" if math.isnan(half) else f" ± {scale * half:.{digits}f}")
