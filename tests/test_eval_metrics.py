"""Scoring on a hand-made benchmark with known predictions: category aggregation, Sta/Dyn split, Avg over all
questions (not the mean of categories), errors kept in the denominator, random-guess row from the options."""

from __future__ import annotations

import json

import pytest

from rgpt4d_core.eval.metrics import (
    ScoredItem,
    accuracy_table,
    markdown_table,
    mean_std_tables,
    random_guess_table,
)
from rgpt4d_core.eval.tasks import TABLE_COLUMNS, UnknownTaskError, canonical_task, is_static


def _items() -> list[ScoredItem]:
    # VG: 2/4 right (5 options); SR: 1/1; T: 3/5 right (4 options) with one decode error among the wrong;
    # SA: 0/2 (5 options)
    out = [ScoredItem(f"vg{i}", "3D Video Grounding", 5, i < 2) for i in range(4)]
    out.append(ScoredItem("sr0", "SR", 5, True))
    out += [ScoredItem(f"t{i}", "Translational", 4, i < 3) for i in range(4)]
    out.append(ScoredItem("t4", "T", 4, False, error="corrupt"))
    out += [ScoredItem(f"sa{i}", "Speed & Acceleration", 5, False) for i in range(2)]
    return out


def test_columns_follow_the_paper() -> None:
    assert TABLE_COLUMNS == ("Avg", "Sta", "Dyn", "VG", "DM", "SR", "R", "C", "T", "FP", "SA", "DP")


def test_accuracy_table_aggregates_categories_groups_and_all() -> None:
    t = accuracy_table(_items(), "model")
    acc = t.accuracy
    assert acc["VG"] == 50.0 and acc["SR"] == 100.0 and acc["T"] == 60.0 and acc["SA"] == 0.0
    assert acc["DM"] is None and acc["R"] is None
    assert acc["Sta"] == 60.0  # VG 2/4 + SR 1/1
    assert acc["Dyn"] == round(100 * 3 / 7, 2)  # T 3/5 + SA 0/2
    # Avg is over all 12 questions, not the mean of the category accuracies (which would be 52.5)
    assert acc["Avg"] == pytest.approx(round(100 * 6 / 12, 2))
    assert t.counts["Avg"] == 12 and t.counts["T"] == 5
    assert t.errors == {"Avg": 1, "Dyn": 1, "T": 1}


def test_an_error_marked_correct_still_counts_as_wrong() -> None:
    t = accuracy_table([ScoredItem("x", "C", 4, True, error="timeout")], "m")
    assert t.accuracy["C"] == 0.0 and t.counts["C"] == 1


def test_random_guess_row_uses_each_items_options() -> None:
    r = random_guess_table(_items())
    assert r.accuracy["VG"] == 20.0 and r.accuracy["T"] == 25.0
    assert r.accuracy["Avg"] == pytest.approx(round(100 * (7 * 0.2 + 5 * 0.25) / 12, 2))


def test_markdown_and_json_render_every_column() -> None:
    t = accuracy_table(_items(), "model")
    md = markdown_table([random_guess_table(_items()), t], std={"model": {"Avg": 1.25}})
    lines = md.strip().splitlines()
    assert lines[0].count("|") == len(TABLE_COLUMNS) + 2
    assert "| model | 50.0 ± 1.2 |" in md or "| model | 50.0 ± 1.3 |" in md
    assert json.loads(t.to_json())["accuracy"]["VG"] == 50.0


def test_mean_std_over_seeds() -> None:
    a = accuracy_table([ScoredItem("1", "C", 4, True), ScoredItem("2", "C", 4, False)], "s0")  # 50
    b = accuracy_table([ScoredItem("1", "C", 4, True), ScoredItem("2", "C", 4, True)], "s1")  # 100
    m, s = mean_std_tables([a, b], "mean")
    assert m.accuracy["C"] == 75.0 and s["C"] == pytest.approx(35.36, abs=0.01)


@pytest.mark.parametrize(
    ("name", "code"),
    [("VG", "VG"), ("3D Video Grounding", "VG"), ("speed & acceleration", "SA"), ("Displacement & Path Length", "DP"),
     ("False Positive", "FP"), ("counting", "C"), ("Dimension Measurement", "DM")],
)
def test_task_aliases(name: str, code: str) -> None:
    assert canonical_task(name) == code


def test_unknown_task_is_named() -> None:
    with pytest.raises(UnknownTaskError, match="Ego-centric"):
        canonical_task("Ego-centric Orientation")
    assert is_static("SR") and not is_static("R")
