"""Evaluation report files: per-item predictions (JSONL), the 12-column table (Markdown + JSON), a bar chart (PNG).

Layout of a report directory::

    predictions.jsonl        one :meth:`Prediction.to_row` per item, in benchmark order (errors included)
    table.md                 the 12 R4D columns for each model row and the random-guess row, + counts, errors
    table.json               the same numbers, machine-readable (+ summary: errors by code, extractor methods)
    accuracy_by_category.png grouped bars per column (Avg, Sta, Dyn, VG ... DP), one colour per row

``matplotlib`` is imported lazily (Agg backend, no display needed).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rgpt4d_core.eval.metrics import AccuracyTable, markdown_table, table_columns
from rgpt4d_core.eval.predict import Prediction
from rgpt4d_core.eval.tasks import TASK_NAMES

PREDICTIONS_FILE = "predictions.jsonl"
TABLE_MD = "table.md"
TABLE_JSON = "table.json"
CHART_PNG = "accuracy_by_category.png"


@dataclass(frozen=True)
class ReportFiles:
    """Paths of one written report."""

    directory: Path
    predictions: Path
    table_md: Path
    table_json: Path
    chart_png: Path


def write_predictions(path: Path, predictions: Iterable[Prediction]) -> int:
    """Write one JSON line per prediction; returns the number written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for p in predictions:
            fh.write(json.dumps(p.to_row(), ensure_ascii=False) + "\n")
            n += 1
    return n


def read_predictions(path: Path) -> list[Prediction]:
    """Predictions written by :func:`write_predictions`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [Prediction.from_row(json.loads(line)) for line in lines if line.strip()]


def summary_of(predictions: Sequence[Prediction]) -> dict[str, Any]:
    """Counts a reader needs next to the accuracies: items, errors by code, extractor methods, timings."""
    ok = [p for p in predictions if p.error_code is None]
    return {
        "items": len(predictions),
        "answered": len(ok),
        "errors": len(predictions) - len(ok),
        "errors_by_code": dict(Counter(p.error_code for p in predictions if p.error_code is not None)),
        "extractor_methods": dict(Counter(p.method for p in predictions)),
        "no_option_chosen": sum(1 for p in ok if p.pred_index is None),
        "mean_decode_ms": round(sum(p.decode_ms for p in ok) / len(ok), 2) if ok else None,
        "mean_generate_ms": round(sum(p.generate_ms for p in ok) / len(ok), 2) if ok else None,
    }


def error_note(summary: dict[str, Any]) -> str:
    """One Markdown sentence on unanswerable items (they stay in every denominator)."""
    if not summary["errors"]:
        return f"All {summary['items']} items were answered (no decode or input errors)."
    codes = ", ".join(f"{c}: {n}" for c, n in sorted(summary["errors_by_code"].items()))
    return (
        f"{summary['errors']} of {summary['items']} items could not be answered ({codes}); they are counted "
        "as wrong and stay in every denominator."
    )


def render_markdown(tables: Sequence[AccuracyTable], summary: dict[str, Any], title: str = "") -> str:
    """The Markdown report: title, the 12-column table, counts per column and the error note."""
    head = f"## {title}\n\n" if title else ""
    counts = tables[0].counts if tables else {}
    columns = table_columns(tables)
    count_row = "| n | " + " | ".join(str(counts.get(c, 0)) for c in columns) + " |\n"
    legend = ", ".join(f"{code} = {name}" for code, name in TASK_NAMES.items() if code in columns)
    probe = " TB is outside Avg." if "TB" in columns else ""
    return (
        f"{head}{markdown_table(tables)}{count_row}\n"
        f"Accuracy in % (Avg over all R4D questions; Sta = VG+DM+SR, Dyn = R+C+T+FP+SA+DP).{probe} {legend}.\n\n"
        f"{error_note(summary)}\n"
    )


def bar_chart(tables: Sequence[AccuracyTable], path: Path, title: str = "") -> Path:
    """Grouped bar chart of the 12 columns (and TB), one bar colour per table (random-guess row drawn hatched)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(12, 4.2), dpi=100)
    n = max(1, len(tables))
    width = 0.8 / n
    columns = table_columns(tables)
    for i, t in enumerate(tables):
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(columns))]
        ys = [t.accuracy.get(c) or 0.0 for c in columns]
        hatch = "//" if t.name.lower().startswith("random") else None
        ax.bar(xs, ys, width=width, label=t.name, hatch=hatch, edgecolor="black", linewidth=0.4)
    ax.set_xticks(range(len(columns)), list(columns))
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.axvline(2.5, color="grey", linewidth=0.6)
    ax.axvline(5.5, color="grey", linewidth=0.6, linestyle=":")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(
    directory: Path,
    predictions: Sequence[Prediction],
    tables: Sequence[AccuracyTable],
    title: str = "",
    extra: dict[str, Any] | None = None,
) -> ReportFiles:
    """Write predictions, tables (Markdown + JSON) and the chart into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(directory, directory / PREDICTIONS_FILE, directory / TABLE_MD, directory / TABLE_JSON,
                        directory / CHART_PNG)  # fmt: skip
    write_predictions(files.predictions, predictions)
    summary = summary_of(predictions)
    files.table_md.write_text(render_markdown(tables, summary, title), encoding="utf-8")
    payload = {
        "title": title,
        "columns": list(table_columns(tables)),
        "tables": [json.loads(t.to_json()) for t in tables],
        "summary": summary,
        **(extra or {}),
    }
    files.table_json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    bar_chart(tables, files.chart_png, title)
    return files


def read_tables(path: Path) -> list[AccuracyTable]:
    """The tables stored in a ``table.json``."""
    payload = json.loads(path.read_text(encoding="utf-8"))
    return [AccuracyTable(name=t["name"], accuracy=t["accuracy"], counts=t["counts"], errors=t.get("errors", {}))
            for t in payload["tables"]]  # fmt: skip
