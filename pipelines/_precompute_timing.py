"""Start-up and steady-state throughput of a precompute run, from when each part's work started and finished.

The times are taken where the work runs (``time.time()`` in the actor or write task, so they are comparable across
nodes of one cluster), not when the driver receives the part: Ray Data hands finished blocks to the driver in
bursts, and receipt times made a 1-actor job look 3x faster than one CPU can decode and run the expert.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PartDone:
    """One written part: wall-clock ``started``/``finished`` (s, epoch) of its call and its clip rows."""

    started: float
    finished: float
    clip_rows: int


def startup_s(t0: float, parts: list[PartDone]) -> float:
    """Seconds from ``t0`` (epoch, the run's start) until the first part was written; 0 without parts."""
    return min(p.finished for p in parts) - t0 if parts else 0.0


def steady_clips_per_s(parts: list[PartDone], first_round: int) -> float:
    """Clip rows per second once every worker has written its first part.

    The first ``first_round`` parts to finish (one per actor) hold actor start-up and are left out; the rate is
    the remaining clips over the span from the earliest start of a remaining part to the last finish. That span
    also holds the end of slower workers' first parts, so the figure errs low, never above what the workers did.
    0 when there are no parts beyond the first round.
    """
    rest = sorted(parts, key=lambda p: p.finished)[max(1, first_round) :]
    if not rest:
        return 0.0
    span = max(p.finished for p in rest) - min(p.started for p in rest)
    return sum(p.clip_rows for p in rest) / span if span > 0 else 0.0
