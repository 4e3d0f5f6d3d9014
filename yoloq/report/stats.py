"""A paired mean difference with its 95% confidence interval (Student's t over the per-seed differences),
shared by the method comparison and the mixed-precision frontier."""

from __future__ import annotations

import math
import statistics


def mean_interval(diffs: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of the differences; one difference has no spread, so its bounds are nan."""
    from scipy.stats import t as student_t  # lazily: the multirun callback imports the report in every run

    mean, n = statistics.fmean(diffs), len(diffs)
    if n < 2:
        return mean, float("nan"), float("nan")
    if len(set(diffs)) == 1:  # no spread at all: the interval is the point (t's scale 0 would give nan)
        return mean, mean, mean
    low, high = student_t.interval(level, n - 1, loc=mean, scale=statistics.stdev(diffs) / math.sqrt(n))
    return mean, float(low), float(high)


def interval_cell(mean: float, low: float, high: float, n: int, digits: int = 1) -> str:
    """'+2.0 [+1.8, +2.2] (n=3)' in points (x 100) with `digits` decimals, bold where the interval excludes 0."""
    if n < 2:
        return f"{100 * mean:+.{digits}f} (n=1, no interval)"
    real = "**" if low > 0 or high < 0 else ""
    return f"{real}{100 * mean:+.{digits}f} [{100 * low:+.{digits}f}, {100 * high:+.{digits}f}]{real} (n={n})"
