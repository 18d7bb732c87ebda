"""Distillation-only rows: clips of the training split that a run distils on without supervising their answers.

P4D's terms need no answer, only the frozen teacher's targets, which the shards hold for every clip. With
``data.distill_only_per_micro_batch = k`` (``rgpt4d_core/train/config.py``) every micro-batch of ``m`` labelled
questions carries ``k`` more rows, one question row per clip of the split (:func:`one_row_per_clip`, clips beyond
``data.max_samples`` included); the collator feeds them the inference prompt and ignores all their labels
(``rgpt4d_core/train/collate.py``), so the SFT term is the one of a run without them, while L_LD / L_ED average
over ``m + k`` samples. It is how a low-data run can distil the teacher on all the video it has.

Which rows a micro-batch gets is a function of (optimiser step, micro-batch of the step, rank) alone
(:class:`DistillOnlySchedule`): a resumed run replays exactly the rows of a clean one, with any number of workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa

from rgpt4d_core.shards import schema as S


def one_row_per_clip(questions: pa.Table) -> pa.Table:
    """The first row (in table order) of each clip of ``questions`` (column ``clip_id``), in table order."""
    clip_ids = questions.column(S.CLIP_ID).to_numpy(zero_copy_only=False)
    _, first = np.unique(clip_ids, return_index=True)
    return questions.take(pa.array(np.sort(first)))


@dataclass(frozen=True)
class DistillOnlySchedule:
    """The rows of a table of ``rows`` distillation-only rows that each micro-batch of a run takes.

    The run's slots are numbered in the order (optimiser step, micro-batch of the step, rank, ``j < per_micro_batch``);
    slot ``s`` takes row ``order(s // rows)[s % rows]``, where ``order(c)`` is a permutation of the rows seeded by
    ``(seed, c)``: every cycle of ``rows`` slots visits every row once, in a new order.

    Attributes:
        rows: rows of the distillation-only table (> 0).
        per_micro_batch: rows added to each micro-batch (> 0).
        accumulation: micro-batches per optimiser step per worker.
        world: workers.
        seed: the run's seed (``loop.seed``).
    """

    rows: int
    per_micro_batch: int
    accumulation: int
    world: int
    seed: int

    def __post_init__(self) -> None:
        if self.rows < 1 or self.per_micro_batch < 1 or self.accumulation < 1 or self.world < 1:
            raise ValueError(f"distillation-only schedule needs positive sizes, got {self}")

    def indices(self, step: int, micro_batch: int, rank: int) -> np.ndarray:
        """int64 ``[per_micro_batch]`` row indices for micro-batch ``micro_batch`` (0-based, ``< accumulation``) of
        optimiser step ``step`` (0-based) on ``rank``."""
        k = self.per_micro_batch
        first = ((step * self.accumulation + micro_batch) * self.world + rank) * k
        slots = np.arange(first, first + k, dtype=np.int64)
        cycles = slots // self.rows
        out = np.empty(k, dtype=np.int64)
        for cycle in np.unique(cycles):
            here = cycles == cycle
            out[here] = _cycle_order(self.rows, self.seed, int(cycle))[slots[here] % self.rows]
        return out


@lru_cache(maxsize=4)
def _cycle_order(rows: int, seed: int, cycle: int) -> np.ndarray:
    """The seeded permutation of ``rows`` row indices used in ``cycle`` (int64 ``[rows]``)."""
    return np.random.default_rng([seed % 2**32, cycle]).permutation(rows)
