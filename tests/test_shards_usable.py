"""The question-row filter of distillation (``rgpt4d_core.shards.usable``): ok rows of one split, or of all."""

from __future__ import annotations

import pyarrow as pa

from rgpt4d_core.shards import schema as S
from rgpt4d_core.shards.usable import usable_mask


def _table() -> pa.Table:
    return pa.table({S.STATUS: [S.STATUS_OK, "error", S.STATUS_OK, S.STATUS_OK],
                     S.SPLIT: ["train", "train", "test", "train"], "q": [0, 1, 2, 3]})  # fmt: skip


def test_mask_keeps_ok_rows_of_the_split_or_of_every_split() -> None:
    assert usable_mask(_table(), "train").to_pylist() == [True, False, False, True]
    assert usable_mask(_table(), "").to_pylist() == [True, False, True, True]
