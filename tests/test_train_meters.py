"""Input-wait fractions of a training loop (``rgpt4d_core/train/meters.py``), on a fake clock: no timing assert."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rgpt4d_core.train.meters import InputWait, SteadyRate


class FakeClock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_input_wait_splits_each_step_window_into_waiting_joining_and_the_rest() -> None:
    clock = FakeClock()
    meter = InputWait(clock)

    def slow_source() -> Iterator[int]:
        for item, fetch_s in ((10, 3.0), (11, 1.0), (12, 0.5)):
            clock.now += fetch_s  # the iterator blocks this long before handing out the item
            yield item

    seen = []
    laps = []
    for item in meter.iterate(slow_source()):
        seen.append(item)
        with meter.joining():
            clock.now += 0.5  # joining clips, collating
        clock.now += 0.5  # the step's compute
        laps.append(meter.lap())
    assert seen == [10, 11, 12]  # same items, same order
    assert laps[0] == {"data/wait_fraction": 3.0 / 4.0, "data/join_fraction": 0.5 / 4.0}
    assert laps[1] == {"data/wait_fraction": 0.5, "data/join_fraction": 0.25,
                       "data/steady_wait_fraction": 0.5, "data/steady_join_fraction": 0.25}
    assert laps[2]["data/wait_fraction"] == pytest.approx(1 / 3)
    assert laps[2]["data/steady_wait_fraction"] == pytest.approx(1.5 / 3.5)  # since the first window ended (t=4)
    assert meter.waited == 4.5 and meter.joined == 1.5


def test_input_wait_counts_the_wait_for_the_end_and_a_failing_join() -> None:
    clock = FakeClock()
    meter = InputWait(clock)

    def ends_late() -> Iterator[int]:
        yield 1
        clock.now += 2.0  # finding out that the stream is over takes time too

    assert list(meter.iterate(ends_late())) == [1]
    assert meter.waited == 2.0
    with pytest.raises(RuntimeError), meter.joining():
        clock.now += 1.0
        raise RuntimeError("clip store failed")
    assert meter.joined == 1.0


def test_steady_rate_starts_after_the_first_step() -> None:
    rate = SteadyRate()
    rate.add(8, 800, now=10.0)  # first step: start-up, not counted
    assert rate.rates() == {}
    rate.add(8, 800, now=12.0)
    assert rate.rates() == {"throughput/steady_samples_per_s": 4.0, "throughput/steady_tokens_per_s": 400.0}
