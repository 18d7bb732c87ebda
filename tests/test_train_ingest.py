"""Each worker's rows of a shared training stream (pipelines/_train_ingest.py), for both batch formats."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipelines._train_ingest import rows_of_rank


def test_ranks_partition_a_numpy_group_and_keep_every_column_aligned() -> None:
    group = {"id": np.arange(6), "frames": np.arange(6 * 4).reshape(6, 2, 2)}
    parts = [rows_of_rank(group, rank, 3) for rank in range(3)]
    assert [p["id"].tolist() for p in parts] == [[0, 3], [1, 4], [2, 5]]
    assert all(np.array_equal(p["frames"][:, 0, 0], p["id"] * 4) for p in parts)
    assert rows_of_rank(group, 0, 1) is group


def test_ranks_partition_an_arrow_group_and_record_batches_become_tables() -> None:
    table = pa.table({"id": list(range(5))})
    assert rows_of_rank(table, 1, 2).column("id").to_pylist() == [1, 3]
    batch = table.to_batches()[0]
    one = rows_of_rank(batch, 0, 1)
    assert isinstance(one, pa.Table) and one.column("id").to_pylist() == list(range(5))
