"""The blind (answer-prior) baseline: question templates, the choice rule and its table, on hand-made items."""

from __future__ import annotations

import pytest

from rgpt4d_core.eval.blind import AnswerPrior, blind_table, question_template
from rgpt4d_core.types import VQAItem


def _item(i: int, question: str, options: tuple[str, ...], answer: str, task: str = "DM") -> VQAItem:
    return VQAItem(id=f"q{i}", video="v.mp4", question=question, options=options, answer=answer, task=task)


TRAIN = [
    _item(0, "Does <obj_1> move between 0.0 s and 1.5 s?", ("Yes", "No"), "Yes"),
    _item(1, "Does <obj_2> move between 0.5 s and 2.0 s?", ("No", "Yes"), "Yes"),
    _item(2, "Does <obj_3> move between 1.0 s and 2.5 s?", ("Yes", "No"), "No"),
    _item(3, "How far is <obj_1>?", ("1.0 m", "2.0 m", "3.0 m"), "2.0 m", task="SR"),
    _item(4, "How far apart are <obj_1> and <obj_2>?", ("2.0 m", "4.0 m"), "4.0 m", task="SR"),
]


def test_question_template_masks_object_tags_and_numbers() -> None:
    assert question_template("Between 0.0 s and 1.5 s, does <obj_12> move?") == "Between # s and # s, does <obj> move?"


def test_the_prior_picks_the_templates_most_frequent_answer_then_the_tasks_then_the_first_option() -> None:
    prior = AnswerPrior.fit(TRAIN)
    # same template (other object, other times): "Yes" was right 2 of 3 times, wherever it stands
    assert prior.choose(_item(9, "Does <obj_7> move between 3.0 s and 4.5 s?", ("No", "Yes"), "No")) == "Yes"
    # unseen template: the task's counts ("2.0 m" once, "4.0 m" once: the tie goes to the earlier option)
    assert prior.choose(_item(9, "Which is nearer, <obj_1>?", ("4.0 m", "2.0 m"), "2.0 m", task="SR")) == "4.0 m"
    # nothing known about these options: the first one
    assert prior.choose(_item(9, "What colour is <obj_1>?", ("red", "blue"), "blue", task="C")) == "red"


def test_blind_table_scores_the_prior_in_the_r4d_columns() -> None:
    test = [
        _item(10, "Does <obj_4> move between 0.0 s and 1.5 s?", ("Yes", "No"), "Yes"),  # prior right
        _item(11, "Does <obj_5> move between 0.0 s and 1.5 s?", ("Yes", "No"), "No"),  # prior wrong
        _item(12, "How far is <obj_9>?", ("2.0 m", "3.0 m"), "2.0 m", task="SR"),  # template prior right
        _item(13, "How far is <obj_8>?", ("3.0 m", "4.0 m"), "3.0 m", task="SR"),  # task prior: 4.0 m, wrong
    ]
    table = blind_table(TRAIN, test)
    assert table.name == "Blind (answer prior)"
    assert table.accuracy["DM"] == 50.0 and table.accuracy["SR"] == 50.0 and table.accuracy["Avg"] == 50.0
    assert table.counts["Avg"] == 4 and table.accuracy["T"] is None


def test_a_prior_fitted_on_the_evaluated_questions_is_refused() -> None:
    with pytest.raises(ValueError, match="include 1 evaluated"):
        blind_table(TRAIN, [TRAIN[0]])
