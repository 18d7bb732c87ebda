"""Start-up and steady-state throughput from per-part work times (pipelines/_precompute_timing.py)."""

from __future__ import annotations

import pytest

from pipelines._precompute_timing import PartDone, startup_s, steady_clips_per_s


def test_one_worker_steady_rate_is_its_parts_after_the_first_over_their_time() -> None:
    parts = [PartDone(10.0, 15.0, 16), PartDone(15.0, 17.0, 16), PartDone(17.0, 19.0, 16), PartDone(19.0, 20.0, 8)]
    assert startup_s(9.0, parts) == pytest.approx(6.0)
    assert steady_clips_per_s(parts, first_round=1) == pytest.approx(40 / 5.0)


def test_two_workers_leave_out_each_first_part_and_err_low() -> None:
    # worker A: parts finish at 12, 14, 16 (2 s each); worker B starts late and finishes its first part at 13.
    a = [PartDone(10.0, 12.0, 16), PartDone(12.0, 14.0, 16), PartDone(14.0, 16.0, 16)]
    b = [PartDone(11.0, 13.0, 16), PartDone(13.0, 15.0, 16), PartDone(15.0, 17.0, 16)]
    rate = steady_clips_per_s(a[::-1] + b, first_round=2)  # order of receipt does not matter
    assert rate == pytest.approx(64 / (17.0 - 12.0))
    assert rate <= 2 * 16 / 2.0  # never above what two workers at 8 clips/s each can do


def test_too_few_parts_give_no_steady_rate() -> None:
    assert steady_clips_per_s([PartDone(0.0, 1.0, 16), PartDone(0.0, 1.5, 16)], first_round=2) == 0.0
    assert steady_clips_per_s([], first_round=1) == 0.0 and startup_s(0.0, []) == 0.0
