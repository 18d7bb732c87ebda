"""Multiple-choice option builders: plausible distractors that are unambiguously wrong, shuffled by seed."""

from __future__ import annotations

import numpy as np

_MULTIPLIERS = (0.3, 0.45, 0.6, 0.75, 1.35, 1.6, 2.0, 2.6, 3.2)
_OFFSETS = (0.3, 0.5, 0.8, 1.2, 1.7)


def fmt_number(value: float, unit: str) -> str:
    """``1.234, "m"`` -> ``"1.23 m"`` (two decimals; ``-0.00`` printed as ``0.00``)."""
    v = round(float(value), 2)
    return f"{0.0 if v == 0 else v:.2f} {unit}"


def fmt_time(t: float) -> str:
    """Seconds printed as in R4D-Bench questions: ``2.0 s``."""
    return f"{t:.1f} s"


def numeric_options(value: float, unit: str, rng: np.random.Generator, n: int = 5) -> tuple[list[str], str]:
    """``n`` distinct quantities: the true ``value`` and distractors at least 25 % (and 0.1) away; distractors are
    positive (0 appears only as a true value, e.g. the speed of a still object).

    Returns:
        (options shuffled, answer string). Every distractor differs from every other option by
        ``max(0.25 * larger, 0.1)``, so rounding to two decimals can never make two options equal.
    """
    cands = [value * m for m in _MULTIPLIERS] + [value + d for d in _OFFSETS] + [max(0.0, value - d) for d in _OFFSETS]
    cands = [cands[i] for i in rng.permutation(len(cands))]
    chosen = [round(float(value), 2)]
    for c in cands:
        c = round(float(c), 2)
        if c < 0 or (c == 0 and value > 0) or any(abs(c - o) < max(0.25 * max(c, o), 0.1) for o in chosen):
            continue
        chosen.append(c)
        if len(chosen) == n:
            break
    if len(chosen) < n:
        raise RuntimeError(f"could not build {n} numeric options around {value}")
    texts = [fmt_number(c, unit) for c in chosen]
    return shuffle(texts, rng), texts[0]


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
