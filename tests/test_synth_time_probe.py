"""The time probe TB ("How much time has passed in the video?", paper Table A3): asked only by worlds that list it,
answered by the video's length, no answer rank favoured, scored outside R4D's Avg; and adding the option left the
identity of every world written before it unchanged."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rgpt4d_core.config import to_container, to_yaml
from rgpt4d_core.eval.metrics import ScoredItem, accuracy_table, markdown_table, random_guess_table
from rgpt4d_core.eval.tasks import TABLE_COLUMNS, canonical_task
from rgpt4d_core.synth.config import SynthConfig
from rgpt4d_core.synth.questions import TASKS
from rgpt4d_core.synth.time_questions import TIME_PASSED_QUESTION, duration_options
from rgpt4d_core.synth.writer import build_scene, finalize, write_scene

R4D = SynthConfig(seed=5, num_scenes=6, width=64, height=64, fps_choices=(10, 12), min_duration_s=2.0,
                  max_duration_s=3.5, max_frames=42, min_objects=2, max_objects=4, balance_answers=False)
TIME = dataclasses.replace(R4D, seed=6, num_scenes=60, min_duration_s=2.0, max_duration_s=4.0, max_frames=48,
                           tasks=("TB",), balance_answers=True)  # fmt: skip


@pytest.fixture(scope="module")
def time_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    root = tmp_path_factory.mktemp("time_world")
    for i in range(TIME.num_scenes):
        write_scene(str(root), build_scene(TIME, i))
    return root, finalize(str(root), TIME)


def _rows(root: Path) -> list[dict[str, object]]:
    return [json.loads(line) for s in ("train", "val", "test")
            for line in (root / "questions" / f"{s}.jsonl").read_text().splitlines()]  # fmt: skip


def test_a_time_world_asks_only_the_video_length_among_the_same_options(time_world) -> None:
    root, card = time_world
    rows = _rows(root)
    assert card["questions_per_task"] == {"TB": len(rows)} and len(rows) >= 30
    lengths = ["2.00 seconds", "2.50 seconds", "3.00 seconds", "3.50 seconds", "4.00 seconds"]
    for row in rows:
        scene = json.loads((root / "scenes" / f"{row['scene_id']}.json").read_text())
        assert row["task"] == "TB" and row["question"] == TIME_PASSED_QUESTION
        assert row["answer"] == f"{scene['num_frames'] / scene['fps']:.2f} seconds"  # what the duration sentence says
        assert sorted(row["options"]) == lengths  # the world's five lengths: the text never hints at the answer
    answers = Counter(r["answer"] for r in rows if r["split"] == "train")
    assert set(answers) == set(lengths) and len(set(answers.values())) == 1  # and no length wins by prior
    assert len({tuple(r["options"]) for r in rows}) > 5  # their order is shuffled


def test_a_world_with_more_lengths_offers_a_window_that_holds_the_answer() -> None:
    grid = tuple(2.0 + 0.5 * k for k in range(9))  # 2.0 ... 6.0 s
    assert duration_options(3.0, grid, 0) == [2.0, 2.5, 3.0, 3.5, 4.0]
    assert duration_options(3.0, grid, 2) == [3.0, 3.5, 4.0, 4.5, 5.0]
    assert duration_options(3.0, grid, 3) is None and duration_options(3.25, grid, 0) is None  # outside / off grid
    assert duration_options(2.5, grid[:3], 0) is None  # fewer than four lengths: not askable


def test_default_worlds_ask_the_nine_r4d_categories_and_never_tb() -> None:
    tasks = {q["task"] for i in range(R4D.num_scenes) for q in build_scene(R4D, i).record["questions"]}
    assert tasks <= set(TASKS) and "TB" not in tasks and len(tasks) >= 6
    both = dataclasses.replace(R4D, tasks=(*TASKS, "TB"))
    assert "TB" in {q["task"] for q in build_scene(both, 0).record["questions"]}


def test_the_new_field_leaves_earlier_records_unchanged_until_it_is_set() -> None:
    # the records (world identity, reuse keys, dataset card) of a config that does not set `tasks` are the ones
    # written before the field existed: the structured YAML minus that key
    full = OmegaConf.to_container(OmegaConf.structured(R4D), resolve=True)
    assert isinstance(full, dict) and not full.pop("tasks")
    assert to_container(R4D) == full and "tasks" not in to_yaml(R4D)
    assert list(to_container(TIME)["tasks"]) == ["TB"] and "tasks:\n- TB" in to_yaml(TIME)


def test_unknown_or_repeated_tasks_are_named() -> None:
    with pytest.raises(ValueError, match="synth.tasks"):
        dataclasses.replace(R4D, tasks=("XX",)).validate()
    with pytest.raises(ValueError, match="synth.tasks"):
        dataclasses.replace(R4D, tasks=("TB", "TB")).validate()
    dataclasses.replace(R4D, tasks=("VG", "TB")).validate()


def test_tb_is_scored_in_its_own_column_outside_avg() -> None:
    items = [ScoredItem("a", "VG", 4, True), ScoredItem("b", "T", 5, False),
             ScoredItem("c", "TB", 5, True), ScoredItem("d", "TimeBench", 5, True)]  # fmt: skip
    table = accuracy_table(items, "m")
    assert table.accuracy["Avg"] == 50.0 and table.counts["Avg"] == 2  # the two R4D items only
    assert table.accuracy["TB"] == 100.0 and table.counts["TB"] == 2
    assert list(table.accuracy) == [*TABLE_COLUMNS, "TB"]
    assert random_guess_table(items).accuracy["TB"] == 20.0
    assert markdown_table([table]).splitlines()[0].endswith("| DP | TB |")
    r4d_only = accuracy_table(items[:2], "m")
    assert list(r4d_only.accuracy) == list(TABLE_COLUMNS) and "TB" not in markdown_table([r4d_only])
    assert canonical_task("Time Passed") == "TB"
