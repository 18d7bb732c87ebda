"""How a Ray Train job's workers share one training stream so that a run repeats bit for bit (distillation and
expert pretraining).

Ray Train's default ``streaming_split`` hands each block to whichever worker asks first, so which rows a worker
trains on changed from one run to the next. Instead every worker reads the whole stream in read order (blocks
are not allowed to overtake each other), through the same seeded local shuffle buffer, in groups of
``batch_size x world`` rows, and keeps rows ``rank, rank + world, ...`` of each group: which rows a rank trains on
depends only on the seed and the epoch. Each worker reads every row once per epoch, which costs little for
question rows and small worlds (``docs/cluster.md`` counts the clip reads it implies at scale).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa


@contextmanager
def ordered_datasets() -> Iterator[None]:
    """Datasets created inside this block keep their blocks in read order when they execute (Ray Data would keep
    them in task completion order). A dataset copies the driver's context when it is created, so only the datasets
    created here are affected."""
    import ray.data

    options = ray.data.DataContext.get_current().execution_options
    saved, options.preserve_order = options.preserve_order, True
    try:
        yield
    finally:
        options.preserve_order = saved


def ordered_ingest() -> Any:
    """Ray Train's ``DataConfig`` for a job's ``train`` dataset: not split, blocks delivered in read order."""
    import ray.train

    options = ray.train.DataConfig.default_ingest_options()
    options.preserve_order = True
    return ray.train.DataConfig(datasets_to_split=[], execution_options=options)


def rows_of_rank(group: Any, rank: int, world: int) -> Any:
    """Rows ``rank::world`` of one group: a ``pyarrow`` table / record batch (returned as a table) or a
    ``{column: array}`` batch (``batch_format="numpy"``), every array indexed along its first axis."""
    if isinstance(group, dict):
        return group if world == 1 else {k: np.asarray(v)[rank::world] for k, v in group.items()}
    table = group if isinstance(group, pa.Table) else pa.Table.from_batches([group])
    return table if world == 1 else table.take(pa.array(range(rank, table.num_rows, world)))
