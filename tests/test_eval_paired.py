"""Paired differences and the 95 % t-interval (``rgpt4d_core/eval/paired.py``) against hand-computed values."""

from __future__ import annotations

import math

import pytest

from rgpt4d_core.eval.metrics import AccuracyTable
from rgpt4d_core.eval.paired import interval_text, paired_differences, summarise, t_quantile_975
from rgpt4d_core.eval.tasks import TABLE_COLUMNS


def test_t_quantiles_match_the_statistics_table() -> None:
    assert [t_quantile_975(d) for d in (1, 2, 4, 10, 30)] == [12.706, 4.303, 2.776, 2.228, 2.042]
    # beyond the table (textbook values: df 40 -> 2.021, 60 -> 2.000, 120 -> 1.980) and towards the normal 1.960
    assert t_quantile_975(40) == pytest.approx(2.021, abs=5e-4)
    assert t_quantile_975(60) == pytest.approx(2.000, abs=5e-4)
    assert t_quantile_975(120) == pytest.approx(1.980, abs=5e-4)
    assert t_quantile_975(10**6) == pytest.approx(1.95996, abs=1e-4)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_interval_by_hand() -> None:
    s = summarise([3.0, 2.0, 5.0])  # mean 10/3; deviations -1/3, -4/3, 5/3 -> variance (1 + 16 + 25) / 9 / 2 = 7/3
    assert s.mean == pytest.approx(10 / 3) and s.sd == pytest.approx(math.sqrt(7 / 3))
    half = 4.303 * math.sqrt(7 / 3) / math.sqrt(3)  # t_{0.975, 2} sd / sqrt(n) = 3.7947
    assert s.low == pytest.approx(10 / 3 - half) and s.high == pytest.approx(10 / 3 + half)
    assert interval_text(s) == "+3.3 [-0.5, +7.1]" and not s.excludes_zero()
    assert summarise([4.0, 5.0, 6.0]).excludes_zero()  # 5 ± 4.303 · 1 / √3 = [2.52, 7.48]
    one = summarise([-2.0])
    assert (one.low, one.high, interval_text(one)) == (None, None, "-2.0 (n=1)")


def _table(values: dict[str, float | None]) -> AccuracyTable:
    return AccuracyTable("t", {c: values.get(c) for c in TABLE_COLUMNS}, dict.fromkeys(TABLE_COLUMNS, 10))


def test_paired_differences_pair_by_seed_and_skip_empty_columns() -> None:
    treatment = {0: _table({"Avg": 43.0, "T": 50.0}), 1: _table({"Avg": 52.0}), 2: _table({"Avg": 50.0}), 7: _table({"Avg": 99.0})}
    baseline = {2: _table({"Avg": 45.0}), 0: _table({"Avg": 40.0, "T": 20.0}), 1: _table({"Avg": 50.0})}
    out = paired_differences(treatment, baseline)
    assert out["Avg"].diffs == (3.0, 2.0, 5.0)  # seeds 0, 1, 2 in order; seed 7 has no baseline
    assert out["T"].diffs == (30.0,) and out["T"].low is None  # only seed 0 has T on both sides
    assert "Sta" not in out
