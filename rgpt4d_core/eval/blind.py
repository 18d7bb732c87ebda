"""The blind baseline: questions answered from the training split's answer statistics alone, never the video.

A model that beats the uniform random row may only have learned answer priors (one option text that is right
more often than ``1/num_options`` for a question template). :class:`AnswerPrior` measures how far priors alone
go: for each test question it picks, among that question's options, the option text that was most often the
correct answer to the same question *template* in training (object tags, numbers and times masked), falling
back to the task's answer counts, then to the first option. Ties go to the earlier option. It reads the
question text and the options, never the video, so its row is the ceiling of what a model can reach without
perception on that benchmark.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from rgpt4d_core.eval.metrics import AccuracyTable, ScoredItem, accuracy_table
from rgpt4d_core.types import VQAItem

_OBJECT_TAG = re.compile(r"<obj_\d+>")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def question_template(question: str) -> str:
    """``question`` with object tags and numbers masked: ``"Between 0.0 s and 1.5 s, does <obj_2> move?"`` →
    ``"Between # s and # s, does <obj> move?"``."""
    return _NUMBER.sub("#", _OBJECT_TAG.sub("<obj>", question)).strip()


@dataclass
class AnswerPrior:
    """Counts of correct option texts per question template and per task, from training questions."""

    by_template: dict[str, Counter[str]] = field(default_factory=dict)
    by_task: dict[str, Counter[str]] = field(default_factory=dict)

    @classmethod
    def fit(cls, train: Iterable[VQAItem]) -> AnswerPrior:
        prior = cls()
        for item in train:
            prior.by_template.setdefault(question_template(item.question), Counter())[item.answer] += 1
            prior.by_task.setdefault(item.task, Counter())[item.answer] += 1
        return prior

    def choose(self, item: VQAItem) -> str:
        """The option of ``item`` the prior ranks first (see the module docstring)."""
        for counts in (self.by_template.get(question_template(item.question)), self.by_task.get(item.task)):
            if counts and any(counts[o] for o in item.options):
                return max(item.options, key=lambda o: (counts[o], -item.options.index(o)))
        return item.options[0]


def blind_table(train: Iterable[VQAItem], test: Iterable[VQAItem], name: str = "Blind (answer prior)") -> AccuracyTable:
    """Accuracy of :class:`AnswerPrior` fitted on ``train`` and applied to ``test``, in the 12 R4D columns.

    Raises:
        ValueError: ``train`` holds questions of ``test`` (a prior fitted on the evaluated answers is no baseline).
    """
    train, test = list(train), list(test)
    shared = {it.id for it in train} & {it.id for it in test}
    if shared:
        raise ValueError(f"the blind baseline's training questions include {len(shared)} evaluated ones "
                         f"(e.g. {sorted(shared)[:3]}): fit it on another split")  # fmt: skip
    prior = AnswerPrior.fit(train)
    scored = (ScoredItem(it.id, it.task, len(it.options), prior.choose(it) == it.answer) for it in test)
    return accuracy_table(scored, name)
