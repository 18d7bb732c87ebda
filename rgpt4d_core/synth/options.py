"""Multiple-choice option builders: plausible distractors that are unambiguously wrong, shuffled by seed."""

from __future__ import annotations

import numpy as np

#: ratio between neighbouring options of a numeric ladder (>= 1.34 keeps neighbours 25 % apart)
_RATIO_RANGE = (1.35, 1.65)
#: smallest gap between two numeric options (two-decimal rounding must never make them look alike); small enough
#: that slow speeds and small accelerations still get ladders with the answer at any rank (0.1 left them only the
#: lowest ranks, so "the smallest option" won by prior)
_MIN_GAP = 0.03


def fmt_number(value: float, unit: str) -> str:
    """``1.234, "m"`` -> ``"1.23 m"`` (two decimals; ``-0.00`` printed as ``0.00``)."""
    v = round(float(value), 2)
    return f"{0.0 if v == 0 else v:.2f} {unit}"


def fmt_time(t: float) -> str:
    """Seconds printed as in R4D-Bench questions: ``2.0 s``."""
    return f"{t:.1f} s"


def numeric_options(value: float, unit: str, rng: np.random.Generator, n: int = 5) -> tuple[list[str], str]:
    """``n`` distinct quantities on a geometric ladder ``value · q^(k − r)``, ``k = 0..n−1``, around the true
    ``value``.

    The answer's rank ``r`` among the sorted options is drawn uniformly from the ranks whose ladder keeps every
    option positive and at least :data:`_MIN_GAP` from its neighbours, and the ratio ``q`` uniformly from
    :data:`_RATIO_RANGE`; so neither the largest, the smallest nor the middle option wins by prior, and no option is
    the mean of the others. Neighbours differ by ``max(0.25 · larger, 0.03)`` or more after rounding.

    Returns:
        (options shuffled, answer string).

    Raises:
        RuntimeError: ``value`` is too small for any ladder (below ``_MIN_GAP / (q − 1)``, e.g. a still object's
            speed); the question builders then skip the question.
    """
    q = float(rng.uniform(*_RATIO_RANGE))
    ranks = [r for r in range(n) if _ladder_ok(_ladder(value, q, r, n))]
    if not ranks:
        raise RuntimeError(f"could not build {n} numeric options around {value}")
    rank = ranks[int(rng.integers(len(ranks)))]
    texts = [fmt_number(v, unit) for v in _ladder(value, q, rank, n)]
    return shuffle(texts, rng), texts[rank]


def _ladder(value: float, q: float, rank: int, n: int) -> list[float]:
    """Rounded ladder values, ascending, with ``value`` at index ``rank``."""
    return [round(float(value) * q ** (k - rank), 2) for k in range(n)]


def _ladder_ok(values: list[float]) -> bool:
    return values[0] > 0 and all(b - a >= max(0.25 * b, _MIN_GAP) for a, b in zip(values[:-1], values[1:], strict=True))


def shuffle(options: list[str], rng: np.random.Generator) -> list[str]:
    """A seeded permutation of ``options`` (they must be distinct)."""
    if len(set(options)) != len(options):
        raise ValueError(f"options are not distinct: {options}")
    return [options[i] for i in rng.permutation(len(options))]


def time_options(true_time: float | None, never_text: str, grid: np.ndarray, rng: np.random.Generator) -> tuple[list[str], str]:
    """Event-time options: three times on ``grid`` (distractors >= 1 s from the true time) plus ``never_text``.

    ``true_time=None`` means the event does not happen (the answer is ``never_text``).
    """
    pool = [float(t) for t in grid if true_time is None or abs(float(t) - true_time) >= 1.0 - 1e-9]
    picked: list[float] = [] if true_time is None else [true_time]
    for i in rng.permutation(len(pool)):
        t = pool[int(i)]
        if len(picked) < 3 and all(abs(t - p) >= 0.5 - 1e-9 for p in picked):
            picked.append(t)
    if len(picked) < 3:
        raise RuntimeError("not enough distinct times for the options")
    texts = [f"At {fmt_time(t)}" for t in picked] + [never_text]
    return shuffle(texts, rng), (never_text if true_time is None else texts[0])
