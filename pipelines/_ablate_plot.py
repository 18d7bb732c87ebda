"""The P4D experiment's learning-curve figure (``pipelines/ablate.py``), drawn with matplotlib (a dependency of
MLflow; imported lazily, Agg backend, no display needed).

Left: held-out Avg (or the job's ``column``, e.g. the time probe TB) of each compared recipe against the number of
training questions (mean over seeds, bars = one sample std). Right: the paired difference ``treatment − baseline`` in
it with its 95 % t-interval, and zero.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipelines._ablate_report import Comparison, Outcome


def _sd(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    m = sum(values) / len(values)
    return float((sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5)


def plot_learning_curve(path: Path, found: list[Comparison], outcomes: list[Outcome],
                        questions: Callable[[str], int], labels: dict[str, str], column: str = "Avg") -> Path | None:  # fmt: skip
    """Write the figure to ``path`` (PNG); ``None`` (nothing written) without comparisons or without matplotlib."""
    if not found:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    recipes = list(dict.fromkeys(v for c in found for v in (c.baseline, c.treatment)))
    for variant in recipes:
        sizes = sorted({o.size for o in outcomes if o.variant == variant}, key=questions)
        avgs = [[o.table.accuracy.get(column) or 0.0 for o in outcomes if o.variant == variant and o.size == s]
                for s in sizes]  # fmt: skip
        left.errorbar([questions(s) for s in sizes], [sum(a) / len(a) for a in avgs], yerr=[_sd(a) for a in avgs],
                      marker="o", capsize=3, label=labels.get(variant, variant))  # fmt: skip
    pairs = list(dict.fromkeys((c.treatment, c.baseline) for c in found))
    for treatment, baseline in pairs:
        points = sorted((c for c in found if (c.treatment, c.baseline) == (treatment, baseline) and column in c.columns),
                        key=lambda c: questions(c.size))  # fmt: skip
        xs = [questions(c.size) for c in points]
        summaries = [c.columns[column] for c in points]
        means = [s.mean for s in summaries]
        lows = [m - (s.low if s.low is not None else m) for m, s in zip(means, summaries, strict=True)]
        highs = [(s.high if s.high is not None else m) - m for m, s in zip(means, summaries, strict=True)]
        right.errorbar(xs, means, yerr=[lows, highs], marker="o", capsize=3,
                       label=f"{labels.get(treatment, treatment)} − {labels.get(baseline, baseline)}")  # fmt: skip
    right.axhline(0.0, color="grey", linewidth=0.8)
    log_x = all(questions(c.size) > 0 for c in found)  # sizes are unknown (0) without the world's stamp
    for ax, title, ylabel in ((left, "held-out accuracy", f"{column} (%)"),
                              (right, "paired difference, 95 % CI", f"Δ {column} (points)")):  # fmt: skip
        ax.set_xscale("log" if log_x else "linear")
        ax.set_xlabel("training questions")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
