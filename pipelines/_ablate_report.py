"""The P4D experiment's report (``pipelines/ablate.py``): paired comparisons, the learning curve, the tables.

Everything here is a pure function of the finished runs (:class:`Outcome`) and the job's config, so a report can
be re-rendered from finished trainings (``report_only``) and unit-tested without training.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines._chain import Chain, Trained
from rgpt4d_core.eval.metrics import AccuracyTable, mean_std_tables
from rgpt4d_core.eval.paired import PairedSummary, interval_text, paired_differences
from rgpt4d_core.eval.tasks import SCORED_COLUMNS, TABLE_COLUMNS

BEGIN, END = "<!-- ablate:begin -->", "<!-- ablate:end -->"
LOSS_KEYS = ("loss/sft", "loss/ld", "loss/ed/depth", "loss/ed/flow_2d_backward", "loss/ed/dyn_mask", "loss/total")
#: the training-set size point of a job without ``sizes``
ALL = "all"


@dataclass
class Outcome:
    """One finished (size, seed, variant) training and its evaluation."""

    variant: str
    seed: int
    trained: Trained
    table: AccuracyTable
    losses: dict[str, float]
    random: AccuracyTable | None = None
    size: str = ALL


@dataclass(frozen=True)
class Comparison:
    """``treatment − baseline`` at one training-set size, per column (:func:`paired_differences`)."""

    treatment: str
    baseline: str
    size: str
    seeds: tuple[int, ...] = ()
    columns: dict[str, PairedSummary] = field(default_factory=dict)


def comparisons(pairs: list[list[str]], sizes: list[str], outcomes: list[Outcome]) -> list[Comparison]:
    """Every (pair, size) with at least one seed that both recipes finished, in config order."""
    out = []
    for treatment, baseline in pairs:
        for size in sizes:
            t = {o.seed: o.table for o in outcomes if o.variant == treatment and o.size == size}
            b = {o.seed: o.table for o in outcomes if o.variant == baseline and o.size == size}
            columns = paired_differences(t, b)
            if columns:
                out.append(Comparison(treatment, baseline, size, tuple(sorted(set(t) & set(b))), columns))
    return out


def comparison_csv(found: list[Comparison]) -> str:
    """One row per (comparison, size, column): n, mean, sd, the interval and the per-seed differences."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["treatment", "baseline", "size", "column", "n", "mean", "sd", "ci95_low", "ci95_high", "diffs"])
    for c in found:
        for column, s in c.columns.items():
            writer.writerow([c.treatment, c.baseline, c.size, column, s.n, round(s.mean, 3), round(s.sd, 3),
                             "" if s.low is None else round(s.low, 3), "" if s.high is None else round(s.high, 3),
                             " ".join(f"{d:+.2f}" for d in s.diffs)])  # fmt: skip
    return buffer.getvalue()


def comparison_markdown(c: Comparison, labels: dict[str, str]) -> str:
    """Rows: the difference of each paired seed, then the mean with its 95 % interval; columns: the 12 of the
    accuracy tables (accuracy points)."""
    shown = [k for k in SCORED_COLUMNS if k in TABLE_COLUMNS or k in c.columns]  # the 12, then TB when scored
    rows = [f"#### {labels.get(c.treatment, c.treatment)} − {labels.get(c.baseline, c.baseline)}, size `{c.size}`",
            "", "| paired difference | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]  # fmt: skip
    for i, seed in enumerate(c.seeds):
        cells = [f"{c.columns[k].diffs[i]:+.1f}" if k in c.columns else "-" for k in shown]
        rows.append(f"| seed {seed} | " + " | ".join(cells) + " |")
    means = [interval_text(c.columns[k]) if k in c.columns else "-" for k in shown]
    rows.append("| **mean [95 % CI]** | " + " | ".join(means) + " |")
    return "\n".join(rows) + "\n"


def curve_markdown(found: list[Comparison], questions: Callable[[str], int], means: dict[tuple[str, str], float],
                   labels: dict[str, str], column: str = "Avg") -> str:  # fmt: skip
    """The learning curve as a table: per comparison and size, the training questions, each side's mean ``column``
    (Avg, or a time probe) and the paired difference in it with its interval; comparisons in their order, each one's
    sizes by training questions (ascending), whatever order the config listed them in."""
    rows = [f"| comparison | size | training questions | baseline {column} | treatment {column} | "
            f"paired Δ {column} [95 % CI] | n |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    first: dict[tuple[str, str], int] = {}
    for i, c in enumerate(found):
        first.setdefault((c.treatment, c.baseline), i)
    for c in sorted(found, key=lambda c: (first[(c.treatment, c.baseline)], questions(c.size))):
        avg = c.columns.get(column)
        if avg is None:
            continue
        name = f"{labels.get(c.treatment, c.treatment)} − {labels.get(c.baseline, c.baseline)}"
        rows.append(f"| {name} | {c.size} | {questions(c.size)} | {means.get((c.baseline, c.size), float('nan')):.1f} | "
                    f"{means.get((c.treatment, c.size), float('nan')):.1f} | {interval_text(avg)} | {avg.n} |")  # fmt: skip
    return "\n".join(rows) + "\n"


def mean_avg(outcomes: list[Outcome], column: str = "Avg") -> dict[tuple[str, str], float]:
    """Mean held-out ``column`` (Avg by default) per (variant, size) over seeds."""
    groups: dict[tuple[str, str], list[float]] = {}
    for o in outcomes:
        value = o.table.accuracy.get(column)
        if value is not None:
            groups.setdefault((o.variant, o.size), []).append(value)
    return {k: sum(v) / len(v) for k, v in groups.items()}


def selected(candidates: list[str], size: str, outcomes: list[Outcome], column: str = "Avg") -> tuple[str, float] | None:
    """The candidate variant with the best mean ``column`` at ``size`` (ties: the first in config order), or
    ``None``."""
    means = mean_avg(outcomes, column)
    scored = [(v, means[(v, size)]) for v in candidates if (v, size) in means]
    return max(scored, key=lambda vs: vs[1]) if scored else None


def summary_tables(labels: dict[str, str], sizes: list[str], outcomes: list[Outcome]
                   ) -> tuple[list[AccuracyTable], dict[str, dict[str, float]]]:  # fmt: skip
    """Mean tables (one per variant and size with at least one run) and their per-column std, then one random row."""
    tables, std = [], {}
    for size in sizes:
        for key, label in labels.items():
            runs = [o.table for o in outcomes if o.variant == key and o.size == size]
            if runs:
                name = f"{label} (n={len(runs)})" if len(sizes) == 1 else f"{label}, size {size} (n={len(runs)})"
                mean, s = mean_std_tables(runs, name)
                tables.append(mean)
                std[name] = s
    randoms = [o.random for o in outcomes if o.random is not None]
    if randoms:
        tables.append(randoms[0])
    return tables, std


def relative(path: Path | str) -> str:
    """``path`` relative to the current directory when it lies below it (the report is committed: no machine paths)."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def setup_lines(chain: Chain, distill: Any, variants: dict[str, Any], outcomes: list[Outcome]) -> list[str]:
    """World, expert, training and recipe lines of the report's setup."""
    lines = []
    stamp = chain.out / "synth" / ".chain_stamp.json"
    if stamp.is_file():
        lines.append(f"- data: synthetic world `{relative(chain.out / 'synth')}`, questions per split "
                     f"{json.loads(stamp.read_text()).get('payload', {}).get('questions_per_split')}")  # fmt: skip
    expert = chain.out / "expert" / ".chain_stamp.json"
    if expert.is_file():
        m = json.loads(expert.read_text()).get("payload", {}).get("metrics", {})
        keys = ("heldout/abs_rel", "untrained/abs_rel", "heldout/flow_epe", "untrained/flow_epe",
                "zero_motion/flow_epe", "classical/flow_epe", "heldout/flow_epe_moving", "zero_motion/flow_epe_moving",
                "classical/flow_epe_moving", "heldout/dyn_mask_iou", "untrained/dyn_mask_iou")  # fmt: skip
        lines.append("- frozen expert (l4p_tiny, held-out clips): " + ", ".join(f"{k} {m[k]:.3f}" for k in keys if k in m))
    steps = sorted({o.trained.steps for o in outcomes})
    lines.append(f"- training: {steps} optimiser steps per run, the same shards and step count for both sides of a "
                 f"comparison; distill config {distill.config} + {distill.overrides}")  # fmt: skip
    ran = {o.variant for o in outcomes}
    lines += [f"- {v.label}: {v.config} + {v.overrides}" + (f", teacher {v.teacher}" if v.teacher != "trained" else "")
              for k, v in variants.items() if k in ran]  # fmt: skip
    return lines


def losses_markdown(outcomes: list[Outcome]) -> str:
    rows = ["| run | " + " | ".join(LOSS_KEYS) + " |", "|---|" + "---|" * len(LOSS_KEYS)]
    rows += [f"| {o.variant}/{o.size}/seed{o.seed} | " + " | ".join(str(o.losses.get(k, "-")) for k in LOSS_KEYS) + " |"
             for o in outcomes]  # fmt: skip
    return "\n".join(rows) + "\n"


def replace_block(path: Path, block: str) -> Path:
    """Replace the generated block of ``path`` (between :data:`BEGIN` and :data:`END`), keeping the rest."""
    text = path.read_text() if path.is_file() else "# Results\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
