"""Statistics for leaderboards and comparisons: mean, sample std and the one-sided Welch t-test, from scipy.stats."""

from __future__ import annotations

import numpy as np
from scipy import stats


def mean_std(values: list[float]) -> tuple[float, float]:
    """(mean, sample standard deviation with ddof=1; 0.0 for a single value) of ``values`` in float64."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom (scipy.stats.t.sf)."""
    return float(stats.t.sf(t, df))


def welch_one_sided(better: list[float], worse: list[float]) -> float | None:
    """p-value of H1: mean(better) < mean(worse) (lower BPB is better), Welch's unequal-variance t-test
    (scipy.stats.ttest_ind, equal_var=False, alternative="greater" on worse vs better). None when a side has
    fewer than 2 seeds. Two samples without variance give 0.0 when ``worse`` is higher, else 1.0 (scipy
    returns NaN there)."""
    a, b = np.asarray(better, np.float64), np.asarray(worse, np.float64)
    if len(a) < 2 or len(b) < 2:
        return None
    if a.var(ddof=1) + b.var(ddof=1) == 0:
        return 0.0 if b.mean() > a.mean() else 1.0
    return float(stats.ttest_ind(b, a, equal_var=False, alternative="greater").pvalue)
