"""Paired comparison of two recipes over seeds: per-seed differences and a 95 % Student-t interval of their mean.

Two recipes trained with the same seed see the same data order and initial weights, so the seed-to-seed variation
they share cancels in the per-seed difference ``treatment − baseline`` (accuracy points, per table column). For
``n`` paired seeds the interval is ``mean ± t_{0.975, n−1} · sd / √n`` (``sd`` the sample standard deviation,
ddof 1); with one seed there is no interval.

The t quantile is tabulated for 1–30 degrees of freedom (to 3 decimals, as in any statistics table) and
computed beyond by the Cornish–Fisher expansion around the normal quantile (error < 1e-4 for df > 30): no
SciPy needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rgpt4d_core.eval.metrics import AccuracyTable
from rgpt4d_core.eval.tasks import SCORED_COLUMNS

#: t_{0.975, df} for df = 1..30
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_Z975 = 1.959964


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` ≥ 1 degrees of freedom (two-sided 95 %)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3


@dataclass(frozen=True)
class PairedSummary:
    """One column's paired differences (accuracy points).

    Attributes:
        diffs: ``treatment − baseline`` per seed, in seed order.
        mean: their mean.
        sd: their sample standard deviation (0 for one seed).
        low, high: the 95 % t-interval of the mean (``None`` for fewer than two seeds).
    """

    diffs: tuple[float, ...]
    mean: float
    sd: float
    low: float | None
    high: float | None

    @property
    def n(self) -> int:
        return len(self.diffs)

    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely above or below zero."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def summarise(diffs: Sequence[float]) -> PairedSummary:
    """Mean, sd and 95 % t-interval of paired differences."""
    if not diffs:
        raise ValueError("no paired differences")
    n = len(diffs)
    mean = sum(diffs) / n
    if n == 1:
        return PairedSummary(tuple(diffs), mean, 0.0, None, None)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return PairedSummary(tuple(diffs), mean, sd, mean - half, mean + half)


def paired_differences(treatment: Mapping[int, AccuracyTable], baseline: Mapping[int, AccuracyTable],
                       columns: Sequence[str] = SCORED_COLUMNS) -> dict[str, PairedSummary]:  # fmt: skip
    """Per column, the summary of ``treatment[seed] − baseline[seed]`` over the seeds both have (sorted), skipping
    seeds where either side has no value in that column; columns with no pair are left out."""
    seeds = sorted(set(treatment) & set(baseline))
    out: dict[str, PairedSummary] = {}
    for column in columns:
        diffs = []
        for s in seeds:
            a, b = treatment[s].accuracy.get(column), baseline[s].accuracy.get(column)
            if a is not None and b is not None:
                diffs.append(a - b)
        if diffs:
            out[column] = summarise(diffs)
    return out


def interval_text(summary: PairedSummary) -> str:
    """``"+2.3 [+0.4, +4.2]"`` (one decimal, signed), or ``"+2.3 (n=1)"`` without an interval."""
    if summary.low is None or summary.high is None:
        return f"{summary.mean:+.1f} (n={summary.n})"
    return f"{summary.mean:+.1f} [{summary.low:+.1f}, {summary.high:+.1f}]"
