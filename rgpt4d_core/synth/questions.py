"""Region-level 4D multiple-choice questions in R4D-Bench's nine categories, answered exactly from the scene.

Static: VG (3D box at a time), DM (size / distance in metres), SR (left/right, closer/farther between regions).
Dynamic: R (rotation direction), C (counting), T (translation direction), FP (events that do not happen),
SA (speed / acceleration), DP (displacement / path length).

Every question carries ``meta``: a machine-readable statement of what is asked (object ids, times, quantity) so
that answers can be re-derived from the ground-truth arrays alone (``tests/test_synth_questions.py`` does).
Frames of the world: positions are in the ground frame of the first camera (x right, y forward, z up, metres).

The builders are ``static_questions.py`` (VG, DM, SR), ``dynamic_questions.py`` (R, C, T, FP, SA, DP) and, asked
only when a world lists it (``SynthConfig.tasks``), ``time_questions.py`` (the time probe TB), over a
:class:`~rgpt4d_core.synth.question_context.QuestionContext`; the regions are ``marks.py`` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from rgpt4d_core.eval.tasks import TIME_TASKS
from rgpt4d_core.synth.dynamic_questions import (
    c_question,
    dp_question,
    fp_question,
    r_question,
    sa_question,
    t_question,
)
from rgpt4d_core.synth.marks import Mark, find_marks
from rgpt4d_core.synth.options import fmt_number
from rgpt4d_core.synth.question_context import QuestionContext
from rgpt4d_core.synth.render import Rendering
from rgpt4d_core.synth.scenes import Scene
from rgpt4d_core.synth.static_questions import dm_question, sr_question, vg_question
from rgpt4d_core.synth.time_questions import tb_question

STATIC_TASKS: tuple[str, ...] = ("VG", "DM", "SR")
DYNAMIC_TASKS: tuple[str, ...] = ("R", "C", "T", "FP", "SA", "DP")
TASKS: tuple[str, ...] = STATIC_TASKS + DYNAMIC_TASKS
#: every category a world can ask (the time probe TB, outside R4D-Bench's Avg, only when listed), in the order a scene asks them
QUESTION_TASKS: tuple[str, ...] = TASKS + TIME_TASKS

#: task -> builder of one question (``None``: this scene cannot ask it fairly)
BUILDERS: dict[str, Callable[[QuestionContext], dict[str, Any] | None]] = {
    "VG": vg_question,
    "DM": dm_question,
    "SR": sr_question,
    "R": r_question,
    "C": c_question,
    "T": t_question,
    "FP": fp_question,
    "SA": sa_question,
    "DP": dp_question,
    "TB": tb_question,
}


def make_questions(
    scene: Scene, rendering: Rendering, marks: list[Mark], rng: np.random.Generator, per_category: int = 1,
    tasks: tuple[str, ...] = TASKS, durations: tuple[float, ...] = (),
) -> list[dict[str, Any]]:
    """Up to ``per_category`` questions of every task in ``tasks`` (codes of :data:`QUESTION_TASKS`, asked in that
    order) for one scene (none when no region is visible). ``durations``: the video lengths the world draws from
    (the options of TB, which is not asked without them).

    Returns:
        dicts with ``task, question, options, answer, meta`` (the writer adds ids, paths and regions).
        Each answer appears exactly once in its options; options are distinct and 4-5 long.
    """
    if not marks:
        return []
    ctx = QuestionContext(scene, rendering, marks, rng, durations)
    out: list[dict[str, Any]] = []
    for task in tasks:
        seen: set[str] = set()
        # one question per answer per scene: a scene of still objects would fill the rotation task with
        # "It does not rotate" otherwise
        answers: set[str] = set()
        for _ in range(per_category * 4):
            item = BUILDERS[task](ctx)
            if item is None or item["question"] in seen or item["answer"] in answers:
                continue
            seen.add(item["question"])
            answers.add(item["answer"])
            out.append({"task": task, **item})
            if len(seen) == per_category:
                break
    for item in out:
        assert item["answer"] in item["options"] and 4 <= len(item["options"]) <= 5, item
    return out


__all__ = ["TASKS", "STATIC_TASKS", "DYNAMIC_TASKS", "TIME_TASKS", "QUESTION_TASKS", "Mark", "find_marks",
           "make_questions", "fmt_number"]
