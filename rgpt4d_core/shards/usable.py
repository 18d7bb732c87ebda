"""Which question rows a training job may use: status ``ok`` and, optionally, one split.

The filter runs inside Ray Data read tasks, which start in fresh worker processes; this module therefore imports
only ``pyarrow`` and the shard schema (no torch), so a task costs a read, not a 5-second model-stack import.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from rgpt4d_core.shards import schema as S


def usable_mask(table: pa.Table, split: str) -> pa.ChunkedArray:
    """Boolean row mask of ``table`` (columns ``status`` and ``split``): ok rows of ``split``, of every split when
    ``split == ""``."""
    mask = pc.equal(table.column(S.STATUS), S.STATUS_OK)
    if split:
        mask = pc.and_(mask, pc.equal(table.column(S.SPLIT), split))
    return mask


@dataclass(frozen=True)
class KeepUsable:
    """``map_batches`` function (``batch_format="pyarrow"``): the batch's usable rows of ``split``."""

    split: str

    def __call__(self, batch: pa.Table) -> pa.Table:
        return batch.filter(usable_mask(batch, self.split))
