"""Steady training throughput: samples/s and tokens/s after the first optimiser step, start-up and warm-up excluded.

Used by the distillation worker (``throughput/steady_*`` metrics) and by the plain-PyTorch loop of
``bench/distill.py``, so both sides of the benchmark measure the same thing.
"""

from __future__ import annotations


class SteadyRate:
    """Samples/s and tokens/s since the end of this attempt's first step (start-up and warm-up excluded)."""

    def __init__(self) -> None:
        self.t0: float | None = None
        self.samples = self.tokens = 0.0
        self.t = 0.0

    def add(self, samples: float, tokens: float, now: float) -> None:
        """A step of ``samples`` samples and ``tokens`` tokens ended at ``now`` (seconds, ``time.perf_counter``)."""
        if self.t0 is None:
            self.t0 = now
            return
        self.samples, self.tokens, self.t = self.samples + samples, self.tokens + tokens, now

    def rates(self) -> dict[str, float]:
        """``throughput/steady_samples_per_s`` and ``..._tokens_per_s``; empty before the second step."""
        if self.t0 is None or self.t <= self.t0:
            return {}
        span = self.t - self.t0
        return {"throughput/steady_samples_per_s": self.samples / span, "throughput/steady_tokens_per_s": self.tokens / span}
