"""Accuracy tables in R4D-Bench's 12-column format (Avg, Sta, Dyn, then the nine categories).

* ``Avg`` is the accuracy over *all* scored R4D questions (not the mean of category accuracies), as in the paper;
  ``Sta``/``Dyn`` likewise over the questions of each group. The time probe ``TB`` (``tasks.TIME_TASKS``) has a
  13th column of its own, present only when the benchmark asks it, and stays out of Avg, Sta and Dyn.
* Items that could not be scored (e.g. the video failed to decode) are counted as wrong and reported in
  ``errors``: they never silently leave the denominator.
* The random-guess row is the expected accuracy of a uniform guess, ``mean(1 / len(options))`` over the items
  of each column, computed from the benchmark itself (20 % for 5 options, 25 % for 4).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from rgpt4d_core.eval.tasks import (
    ALL_TASKS,
    DYNAMIC_TASKS,
    SCORED_COLUMNS,
    STATIC_TASKS,
    TABLE_COLUMNS,
    TIME_TASKS,
    canonical_task,
)


@dataclass(frozen=True)
class ScoredItem:
    """One benchmark question after prediction.

    Attributes:
        id: benchmark item id.
        task: task name in any spelling (canonicalised when scored).
        num_options: number of answer options (for the random-guess row).
        correct: whether the predicted option index equals the answer's index.
        error: why the item could not be answered (decode failure, ...); such items count as wrong.
    """

    id: str
    task: str
    num_options: int
    correct: bool
    error: str | None = None


@dataclass(frozen=True)
class AccuracyTable:
    """Percentages per column (``None`` where a column has no questions) plus counts."""

    name: str
    accuracy: dict[str, float | None]
    counts: dict[str, int]
    errors: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "accuracy": self.accuracy, "counts": self.counts, "errors": self.errors},
                          indent=2, sort_keys=False)


def _columns_of(task: str) -> tuple[str, ...]:
    code = canonical_task(task)
    if code in TIME_TASKS:
        return (code,)
    group = "Sta" if code in STATIC_TASKS else "Dyn"
    return ("Avg", group, code)


def _present(counts: dict[str, int]) -> tuple[str, ...]:
    """The 12 R4D columns, then each time-probe column that has questions."""
    return (*TABLE_COLUMNS, *(c for c in TIME_TASKS if counts.get(c)))


def table_columns(tables: Iterable[AccuracyTable]) -> tuple[str, ...]:
    """The columns to print for ``tables``: the 12 R4D columns, then the time probes any of them scored."""
    present = {c for t in tables for c in t.accuracy}
    return tuple(c for c in SCORED_COLUMNS if c in TABLE_COLUMNS or c in present)


def _percent(num: float, den: int) -> float | None:
    return None if den == 0 else round(100.0 * num / den, 2)


def accuracy_table(items: Iterable[ScoredItem], name: str) -> AccuracyTable:
    """Score ``items`` into the 12 columns (and ``TB`` when asked); errors count as wrong and are tallied per
    column."""
    hits = dict.fromkeys(SCORED_COLUMNS, 0)
    counts = dict.fromkeys(SCORED_COLUMNS, 0)
    errors = dict.fromkeys(SCORED_COLUMNS, 0)
    for it in items:
        for col in _columns_of(it.task):
            counts[col] += 1
            hits[col] += int(it.correct and it.error is None)
            errors[col] += int(it.error is not None)
    columns = _present(counts)
    return AccuracyTable(
        name=name,
        accuracy={c: _percent(hits[c], counts[c]) for c in columns},
        counts={c: counts[c] for c in columns},
        errors={c: n for c, n in errors.items() if n},
    )


def random_guess_table(items: Iterable[ScoredItem], name: str = "Random") -> AccuracyTable:
    """Expected accuracy of a uniform guess over each item's options, in the same columns."""
    expected = dict.fromkeys(SCORED_COLUMNS, 0.0)
    counts = dict.fromkeys(SCORED_COLUMNS, 0)
    for it in items:
        if it.num_options < 1:
            raise ValueError(f"item {it.id!r} has no options")
        for col in _columns_of(it.task):
            counts[col] += 1
            expected[col] += 1.0 / it.num_options
    columns = _present(counts)
    return AccuracyTable(name=name, accuracy={c: _percent(expected[c], counts[c]) for c in columns},
                         counts={c: counts[c] for c in columns})


def markdown_table(tables: Iterable[AccuracyTable], std: dict[str, dict[str, float]] | None = None) -> str:
    """Render tables as one Markdown table with the 12 R4D columns (and ``TB`` when any table scored it);
    ``std[name][col]`` adds ``± s``."""
    tables = list(tables)
    columns = table_columns(tables)
    header = "| Method | " + " | ".join(columns) + " |"
    rule = "|---|" + "---|" * len(columns)
    rows = [header, rule]
    for t in tables:
        cells = []
        for c in columns:
            v = t.accuracy.get(c)
            cell = "-" if v is None else f"{v:.1f}"
            if std and t.name in std and c in std[t.name] and v is not None:
                cell += f" ± {std[t.name][c]:.1f}"
            cells.append(cell)
        rows.append(f"| {t.name} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def mean_std_tables(runs: list[AccuracyTable], name: str) -> tuple[AccuracyTable, dict[str, float]]:
    """Mean table over seeds and the per-column sample standard deviation (ddof=1; 0 for one run)."""
    if not runs:
        raise ValueError("no runs to aggregate")
    mean: dict[str, float | None] = {}
    std: dict[str, float] = {}
    for c in table_columns(runs):
        vals = [r.accuracy[c] for r in runs if r.accuracy.get(c) is not None]
        if not vals:
            mean[c] = None
            continue
        m = sum(v for v in vals if v is not None) / len(vals)
        var = sum((v - m) ** 2 for v in vals if v is not None) / (len(vals) - 1) if len(vals) > 1 else 0.0
        mean[c], std[c] = round(m, 2), round(var**0.5, 2)
    return AccuracyTable(name=name, accuracy=mean, counts=runs[0].counts), std


__all__ = [
    "ALL_TASKS",
    "DYNAMIC_TASKS",
    "SCORED_COLUMNS",
    "STATIC_TASKS",
    "TABLE_COLUMNS",
    "TIME_TASKS",
    "AccuracyTable",
    "ScoredItem",
    "accuracy_table",
    "markdown_table",
    "mean_std_tables",
    "random_guess_table",
]
