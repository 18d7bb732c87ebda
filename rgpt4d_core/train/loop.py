"""The training loop, framework-free: epochs of micro-batches, gradient accumulation, data position, checkpoint and
metric cadence. One loop for distillation (``pipelines/_distill_worker.py``), expert pretraining
(``pipelines/_pretrain_expert_worker.py``) and the plain-PyTorch benchmark (``bench/distill.py``).

What a job supplies:

* ``micro_batches(start)``: the micro-batches of the epoch ``start.epoch`` *from its beginning*, in the same order in
  every run (the loop skips the ``start.batches_in_epoch`` a checkpoint already consumed);
* ``step(group, epoch)``: one optimiser step over ``plan.accumulation`` micro-batches (forward/backward, clip,
  ``optimizer.step()``, scheduler) returning the step's metrics; a ``"samples"`` entry (global samples of the step)
  is added to :attr:`~rgpt4d_core.train.checkpoint.DataPosition.samples_seen`;
* :class:`LoopHooks`: ``on_step`` after every step (tracker, fault injection) and ``save`` when a checkpoint is due.

Resume: a run restarted from a checkpoint saved at ``done.position`` replays that epoch's stream, skips what it had
consumed and continues, so a killed run does exactly the optimiser steps of a clean one, on the same micro-batches.

Timing (for data-wait metrics): :attr:`StepDone.data_wait_s` is the time spent blocked in ``next()`` on the
micro-batch iterator for the step's micro-batches (skipped ones included), :attr:`StepDone.wall_s` the time since
the previous step's ``step`` call returned (the first step: since :meth:`TrainingLoop.run` began).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, cast

from rgpt4d_core.train.checkpoint import DataPosition

B = TypeVar("B")

#: metric a step function may return: global samples of the step (all workers), counted into ``samples_seen``
SAMPLES = "samples"


@dataclass(frozen=True)
class LoopPlan:
    """How many micro-batches make a step and an epoch, and how many steps make the run.

    Attributes:
        total_steps: optimiser steps of the whole run.
        accumulation: micro-batches per optimiser step (per worker).
        micro_batches_per_epoch: micro-batches each worker consumes per epoch, a multiple of ``accumulation``;
            an iterator that ends sooner is an error. ``None``: an epoch ends when its iterator does (a trailing
            group smaller than ``accumulation`` is dropped).
    """

    total_steps: int
    accumulation: int = 1
    micro_batches_per_epoch: int | None = None

    def __post_init__(self) -> None:
        if self.accumulation < 1:
            raise ValueError(f"loop plan: accumulation must be >= 1, got {self.accumulation}")
        per_epoch = self.micro_batches_per_epoch
        if per_epoch is not None and (per_epoch < self.accumulation or per_epoch % self.accumulation):
            raise ValueError(
                f"loop plan: micro_batches_per_epoch={per_epoch} is not a positive multiple of "
                f"accumulation={self.accumulation}"
            )


@dataclass(frozen=True)
class Cadence:
    """When metrics go to the tracker and when checkpoints are written (both also after the last step).

    Attributes:
        log_every_steps: metrics are due every N optimiser steps (``<= 0``: every step).
        checkpoint_every_steps: a checkpoint every N optimiser steps (``0``: none besides the others).
        checkpoint_at_epoch_end: a checkpoint after the last step of every epoch (plans with a known epoch length).
    """

    log_every_steps: int = 1
    checkpoint_every_steps: int = 0
    checkpoint_at_epoch_end: bool = True

    def log_due(self, step: int, final: bool) -> bool:
        return final or step % max(1, self.log_every_steps) == 0

    def checkpoint_due(self, step: int, end_of_epoch: bool, final: bool) -> bool:
        every = self.checkpoint_every_steps
        return final or (end_of_epoch and self.checkpoint_at_epoch_end) or (every > 0 and step % every == 0)


@dataclass(frozen=True)
class StepDone:
    """One optimiser step, as the hooks see it.

    Attributes:
        step: optimiser steps completed since the start of the run (1-based).
        epoch: the epoch the step's micro-batches came from.
        position: where a run restarted from a checkpoint taken now continues (the next epoch after its last step).
        metrics: what the step function returned (hooks may add entries before logging them).
        log_due: the cadence wants the metrics logged now.
        checkpoint_due: :meth:`LoopHooks.save` follows.
        end_of_epoch: the step consumed the epoch's last micro-batch (known only for a fixed epoch length).
        final: the run's last step.
        data_wait_s: seconds blocked waiting for this step's micro-batches from the iterator.
        wall_s: seconds since the previous step function returned (the first: since the run began).
    """

    step: int
    epoch: int
    position: DataPosition
    metrics: dict[str, float]
    log_due: bool
    checkpoint_due: bool
    end_of_epoch: bool
    final: bool
    data_wait_s: float
    wall_s: float


class LoopHooks(Protocol):
    """What a job does around the steps."""

    def on_step(self, done: StepDone) -> None:
        """After every step, before a due checkpoint: log ``done.metrics`` when ``done.log_due``; may raise."""

    def save(self, done: StepDone) -> None:
        """A checkpoint is due: write the training state at ``done.position`` (and report it)."""


class NoHooks:
    """Hooks that do nothing: a loop without tracker or checkpoints (benchmarks)."""

    def on_step(self, done: StepDone) -> None:
        pass

    def save(self, done: StepDone) -> None:
        pass


class ShortEpochError(RuntimeError):
    """An epoch's iterator ended before the plan's epoch length, or before one optimiser step."""


#: ``micro_batches(start) -> iterable``: the epoch ``start.epoch`` from its first micro-batch
MicroBatches = Callable[[DataPosition], Iterable[B]]
#: ``step(group, epoch) -> metrics``: one optimiser step over ``accumulation`` micro-batches
StepFn = Callable[[list[B], int], Mapping[str, float]]

_END = object()


class TrainingLoop(Generic[B]):
    """Runs ``plan.total_steps`` optimiser steps from a data position; see the module docstring."""

    def __init__(self, plan: LoopPlan, cadence: Cadence, micro_batches: MicroBatches[B], step: StepFn[B],
                 hooks: LoopHooks, clock: Callable[[], float] = time.perf_counter) -> None:  # fmt: skip
        """``clock``: seconds, for :attr:`StepDone.data_wait_s` and :attr:`StepDone.wall_s`."""
        self.plan, self.cadence, self.hooks = plan, cadence, hooks
        self.micro_batches, self.step_fn, self.clock = micro_batches, step, clock
        self._last = clock()

    def run(self, start: DataPosition) -> DataPosition:
        """Epochs from ``start`` until ``plan.total_steps``; the position after the last step."""
        self._last = self.clock()
        position = start
        while position.optimizer_step < self.plan.total_steps:
            position = self._epoch(position)
        return position

    def _epoch(self, start: DataPosition) -> DataPosition:
        """One epoch from ``start`` (its first ``start.batches_in_epoch`` micro-batches skipped); the position after."""
        plan, epoch, skip = self.plan, start.epoch, start.batches_in_epoch
        per_epoch = plan.micro_batches_per_epoch
        batches = iter(self.micro_batches(start))
        position, consumed, group, wait = start, 0, [], 0.0
        while position.optimizer_step < plan.total_steps and (per_epoch is None or consumed < per_epoch):
            asked = self.clock()
            batch = next(batches, _END)
            wait += self.clock() - asked
            if batch is _END:
                break
            consumed += 1
            if consumed <= skip:
                continue
            group.append(cast(B, batch))
            if len(group) == plan.accumulation:
                position = self._step(group, position, epoch, consumed, wait)
                group, wait = [], 0.0
        self._check_length(start, position, consumed)
        if position.epoch > epoch or position.optimizer_step >= plan.total_steps:  # rolled over already, or done
            return position
        return DataPosition(epoch + 1, 0, position.optimizer_step, position.samples_seen)

    def _check_length(self, start: DataPosition, end: DataPosition, consumed: int) -> None:
        plan, epoch = self.plan, start.epoch
        if end.optimizer_step >= plan.total_steps:
            return
        if plan.micro_batches_per_epoch is not None and consumed < plan.micro_batches_per_epoch:
            raise ShortEpochError(
                f"epoch {epoch} yielded {consumed} micro-batches, expected {plan.micro_batches_per_epoch}"
            )
        if end.optimizer_step == start.optimizer_step:  # the next epoch would not step either: it would never end
            raise ShortEpochError(
                f"epoch {epoch} yielded {consumed} micro-batches, fewer than one optimiser step ({plan.accumulation})"
            )

    def _step(self, group: list[B], before: DataPosition, epoch: int, consumed: int, wait: float) -> DataPosition:
        """One optimiser step over ``group`` (the epoch's micro-batches up to ``consumed``), then the hooks."""
        plan, cadence = self.plan, self.cadence
        metrics = dict(self.step_fn(group, epoch))
        now = self.clock()
        wall, self._last = now - self._last, now
        step = before.optimizer_step + 1
        samples = before.samples_seen + int(metrics.get(SAMPLES, 0))
        end_of_epoch = consumed == plan.micro_batches_per_epoch
        final = step == plan.total_steps
        if end_of_epoch:
            position = DataPosition(epoch + 1, 0, step, samples)
        else:
            position = DataPosition(epoch, consumed, step, samples)
        done = StepDone(
            step=step,
            epoch=epoch,
            position=position,
            metrics=metrics,
            log_due=cadence.log_due(step, final),
            checkpoint_due=cadence.checkpoint_due(step, end_of_epoch, final),
            end_of_epoch=end_of_epoch,
            final=final,
            data_wait_s=wait,
            wall_s=wall,
        )
        self.hooks.on_step(done)
        if done.checkpoint_due:
            self.hooks.save(done)
        return position
