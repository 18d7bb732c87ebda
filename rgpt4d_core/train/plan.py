"""The step plan of a distillation job: optimiser steps per epoch and in all, derived on the driver from the
shards' usable row count and the job's batch settings; and the shuffle seed of each epoch."""

from __future__ import annotations

from dataclasses import dataclass

from rgpt4d_core.train.config import DistillJobConfig
from rgpt4d_core.train.loop import LoopPlan


@dataclass(frozen=True)
class StepPlan:
    """How many optimiser steps a job does, derived from the shard row count on the driver.

    Attributes:
        rows_per_worker: ok rows each worker trains on per epoch (every worker reads the whole stream and keeps
            its rows ``rank::world``).
        micro_batches_per_epoch: micro-batches each worker consumes per epoch (a multiple of ``accumulation``).
        accumulation: micro-batches per optimiser step per worker.
        steps_per_epoch: optimiser steps per epoch.
        total_steps: optimiser steps of the whole job (LR schedule length).
    """

    rows_per_worker: int
    micro_batches_per_epoch: int
    accumulation: int
    steps_per_epoch: int
    total_steps: int

    def loop_plan(self) -> LoopPlan:
        """The :class:`~rgpt4d_core.train.loop.TrainingLoop` plan of this job (per worker)."""
        return LoopPlan(self.total_steps, self.accumulation, self.micro_batches_per_epoch)


def shuffle_seed(seed: int, epoch: int) -> int:
    """Seed of the local shuffle buffer in ``epoch`` of a run seeded ``seed`` (the same on every worker, distinct
    per epoch, the same in every rerun and after a resume)."""
    return (seed * 1_000_003 + epoch * 1_009) % (2**32)


def plan_steps(cfg: DistillJobConfig, ok_rows: int) -> StepPlan:
    """The job's step plan for ``ok_rows`` usable samples.

    Raises:
        ValueError: if one optimiser step needs more samples than the shards hold.
    """
    rows = min(ok_rows, cfg.data.max_samples) if cfg.data.max_samples > 0 else ok_rows
    accumulation = cfg.accumulation_steps()
    rows_per_worker = rows // cfg.scaling.num_workers
    steps_per_epoch = (rows_per_worker // cfg.loop.micro_batch_size) // accumulation
    if steps_per_epoch == 0:
        raise ValueError(
            f"{rows} usable samples cannot fill one optimiser step of loop.global_batch_size="
            f"{cfg.loop.global_batch_size}; lower the batch size or add data ({cfg.data.shards})"
        )
    total = steps_per_epoch * cfg.loop.epochs
    if cfg.loop.max_steps > 0:
        total = min(total, cfg.loop.max_steps)
    return StepPlan(
        rows_per_worker=rows_per_worker,
        micro_batches_per_epoch=steps_per_epoch * accumulation,
        accumulation=accumulation,
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
    )
