"""Which question rows a training job may use: status ``ok`` and, optionally, one split."""

from __future__ import annotations

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
