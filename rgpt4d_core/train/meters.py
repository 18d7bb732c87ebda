"""Rates and input-wait fractions of a training loop, measured on its own thread (plain Python, no torch or Ray).

* :class:`SteadyRate`: samples/s and tokens/s since the end of the first optimiser step (start-up excluded);
* :class:`InputWait`: the fraction of the loop's wall time spent blocked in ``next()`` of its batch iterator
  (``data/wait_fraction``: the input pipeline did not keep up) and in the loop's own input work between batches
  (``data/join_fraction``: joining questions to their clips and collating, which no prefetch hides).

Neither touches the data or the step: wrapping an iterator in :meth:`InputWait.iterate` yields the same items in
the same order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


class SteadyRate:
    """Samples/s and tokens/s since the end of this attempt's first step (start-up and warm-up excluded)."""

    def __init__(self) -> None:
        self.t0: float | None = None
        self.samples = self.tokens = 0.0
        self.t = 0.0

    def add(self, samples: float, tokens: float, now: float) -> None:
        if self.t0 is None:
            self.t0 = now
            return
        self.samples, self.tokens, self.t = self.samples + samples, self.tokens + tokens, now

    def rates(self) -> dict[str, float]:
        if self.t0 is None or self.t <= self.t0:
            return {}
        span = self.t - self.t0
        return {"throughput/steady_samples_per_s": self.samples / span, "throughput/steady_tokens_per_s": self.tokens / span}


class InputWait:
    """Seconds a training loop spends waiting on its input, per step window and since the first step.

    Use :meth:`iterate` around the batch iterator, :meth:`joining` around the loop's own per-batch input work, and
    call :meth:`lap` once per optimiser step (after it): a window runs from the previous lap (or construction) to
    this one. The first window holds the pipeline's start-up, so the ``steady`` fractions start after it, as
    :class:`SteadyRate` does.

    Args:
        clock: monotonic seconds (``time.perf_counter``; a fake one in tests).
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.waited = self.joined = 0.0  # totals, seconds
        self._lap = (clock(), 0.0, 0.0)  # (time, waited, joined) at the last lap
        self._steady: tuple[float, float, float] | None = None  # the same at the end of the first window

    def iterate(self, items: Iterable[T]) -> Iterator[T]:
        """``items``, item for item, adding the time blocked in each ``next()`` to :attr:`waited`."""
        iterator = iter(items)
        while True:
            start = self.clock()
            try:
                item = next(iterator)
            except StopIteration:
                self.waited += self.clock() - start
                return
            self.waited += self.clock() - start
            yield item

    @contextmanager
    def joining(self) -> Iterator[None]:
        """Add the time inside the block to :attr:`joined` (input work on the loop's thread)."""
        start = self.clock()
        try:
            yield
        finally:
            self.joined += self.clock() - start

    def lap(self) -> dict[str, float]:
        """Close a step window: ``data/wait_fraction`` and ``data/join_fraction`` of it, and from the second lap on
        ``data/steady_wait_fraction`` / ``data/steady_join_fraction`` since the end of the first window."""
        now = self.clock()
        out = _fractions("data/", self._lap, now, self.waited, self.joined)
        if self._steady is None:
            self._steady = (now, self.waited, self.joined)
        elif now > self._steady[0]:
            out.update(_fractions("data/steady_", self._steady, now, self.waited, self.joined))
        self._lap = (now, self.waited, self.joined)
        return out


def _fractions(prefix: str, since: tuple[float, float, float], now: float, waited: float,
               joined: float) -> dict[str, float]:
    span = max(now - since[0], 1e-12)
    return {f"{prefix}wait_fraction": (waited - since[1]) / span, f"{prefix}join_fraction": (joined - since[2]) / span}
