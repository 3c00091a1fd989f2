"""Intervals for the numbers reports show, and the three-way decision verdicts rest on.

- Over seeds (convergence): the mean and a two-sided 95% Student-t interval,
  mean ± t(0.975, n−1) · s/√n, with s the sample standard deviation. Seeds are few (3 in
  the quick tier), so the t quantile is wide (4.30 for n = 3) — as it should be.
- Over repeated steps (throughput): a gain is mean step time without compression ÷ mean
  step time with it (= the ratio of tokens/s), with a 95% percentile bootstrap (the steps
  of each run resampled independently, 2000 draws, fixed seed, so it is reproducible).

A claim is decided only when the whole interval sits on one side of the rule's threshold;
otherwise it is *inconclusive*.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy_stats

LEVEL = 0.95
BOOTSTRAP_DRAWS = 2000
METHOD_SEEDS = "mean ± 95% Student-t interval over seeds"
METHOD_STEPS = "ratio of mean step times, 95% percentile bootstrap over steps (2000 draws, seed 0)"


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95% interval over ``n`` samples (lo = hi = mean when n = 1: no interval)."""

    mean: float
    lo: float
    hi: float
    n: int
    std: float = math.nan

    @property
    def has_interval(self) -> bool:
        return self.n > 1 and math.isfinite(self.lo) and math.isfinite(self.hi)

    def fmt(self, spec: str = "+.3f", unit: str = "") -> str:
        if not self.has_interval:
            return f"{self.mean:{spec}}{unit} (n={self.n}, no interval)"
        return f"{self.mean:{spec}}{unit} [{self.lo:{spec}}, {self.hi:{spec}}] (n={self.n})"

    def above(self, threshold: float) -> bool:
        """The whole interval lies above the threshold."""
        return self.has_interval and self.lo > threshold

    def below(self, threshold: float) -> bool:
        """The whole interval lies at or below the threshold."""
        return self.has_interval and self.hi <= threshold


def t_interval(values: Sequence[float]) -> Estimate:
    """Mean and 95% Student-t interval of ``values`` (NaNs dropped)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = float(v.mean())
    if n == 1:
        return Estimate(mean, math.nan, math.nan, 1)
    std = float(v.std(ddof=1))
    half = float(_scipy_stats.t.ppf(0.5 + LEVEL / 2, n - 1)) * std / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n, std)


def ratio_interval(num: Sequence[float], den: Sequence[float], seed: int = 0) -> Estimate:
    """mean(num) / mean(den) with a 95% percentile bootstrap, each sample resampled on its own.

    ``num``, ``den``: per-step times of two runs (baseline first: the result is a gain).
    ``n`` is the smaller count."""
    a, b = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if len(a) == 0 or len(b) == 0 or b.mean() == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    point = float(a.mean() / b.mean())
    n = min(len(a), len(b))
    if n < 2:
        return Estimate(point, math.nan, math.nan, n)
    rng = np.random.default_rng(seed)
    ra = a[rng.integers(0, len(a), (BOOTSTRAP_DRAWS, len(a)))].mean(1)
    rb = b[rng.integers(0, len(b), (BOOTSTRAP_DRAWS, len(b)))].mean(1)
    lo, hi = np.quantile(ra / rb, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Estimate(point, float(lo), float(hi), n)
