"""Summaries with their uncertainty: mean ± std, t confidence intervals, paired differences."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof=1), n, and a two-sided Student-t confidence interval."""

    mean: float
    std: float
    n: int
    ci_low: float
    ci_high: float
    level: float = 0.95

    def __str__(self) -> str:
        return self.format()

    def format(self, scale: float = 1.0, digits: int = 2) -> str:
        """``"91.23 ± 0.40 (n=3)"``; ``scale=100`` shows fractions as percentages."""
        if self.n < 2:
            return f"{self.mean * scale:.{digits}f} (n={self.n})"
        return f"{self.mean * scale:.{digits}f} ± {self.std * scale:.{digits}f} (n={self.n})"


def summarize(values: Sequence[float], level: float = 0.95) -> Summary:
    """Summary of independent measurements (e.g. one accuracy per seed)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("no values to summarize")
    mean = float(x.mean())
    if x.size < 2:
        return Summary(mean, math.nan, 1, math.nan, math.nan, level)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, df=x.size - 1)) * std / math.sqrt(x.size)
    return Summary(mean, std, int(x.size), mean - half, mean + half, level)


@dataclass(frozen=True)
class PairedComparison:
    """``a - b`` over matched pairs (same seed), with the paired t-test's p-value."""

    difference: Summary
    p_value: float

    def format(self, scale: float = 1.0, digits: int = 2) -> str:
        d = self.difference
        if d.n < 2:
            return f"{d.mean * scale:+.{digits}f} (n={d.n})"
        return (f"{d.mean * scale:+.{digits}f} ± {d.std * scale:.{digits}f}, "
                f"{int(d.level * 100)}% CI [{d.ci_low * scale:+.{digits}f}, {d.ci_high * scale:+.{digits}f}], "
                f"p={self.p_value:.3g} (n={d.n})")


def paired(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> PairedComparison:
    """Compare two methods run with the same seeds: the per-seed differences ``a - b``."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in size: {a.shape} vs {b.shape}")
    diff = summarize(a - b, level)
    # Differences without spread (identical gains on every seed) leave the t statistic undefined: no p-value,
    # rather than scipy's 0 with a precision-loss warning in the notebook.
    spread = a.size >= 2 and np.ptp(a - b) > 0
    p = float(stats.ttest_rel(a, b).pvalue) if spread else math.nan
    return PairedComparison(diff, p)
