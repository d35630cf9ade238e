"""Statistics of a set of runs: the Wilson interval of a share, the olympic mean, a mean's Student-t interval."""
import math

import pytest

from bench.records import stats


def test_wilson_interval_matches_published_values():
    lo, hi = stats.wilson(35, 50)  # DAWNBench's ResNet-9: 94% on 35 of 50 runs
    assert (round(lo, 4), round(hi, 4)) == (0.5625, 0.8090)
    assert stats.wilson(0, 10)[0] == 0.0 and stats.wilson(10, 10)[1] == 1.0
    assert round(stats.wilson(3, 3)[0], 3) == 0.439 and stats.wilson(0, 0) == (0.0, 1.0)


def test_olympic_mean_drops_fastest_and_slowest_and_mean_ci_uses_student_t():
    assert stats.olympic_mean([1.0, 2.0, 3.0, 100.0]) == 2.5
    assert stats.olympic_mean([4.0, 6.0]) == 5.0 and math.isnan(stats.olympic_mean([]))
    mean, half = stats.mean_ci([0.91, 0.92, 0.99])
    assert mean == pytest.approx(0.94) and half == pytest.approx(4.303 * 0.0435890 / math.sqrt(3), rel=1e-4)
    assert math.isnan(stats.mean_ci([0.9])[1])
