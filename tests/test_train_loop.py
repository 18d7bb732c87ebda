"""The framework-free training loop (``rgpt4d_core.train.loop``): accumulation boundaries, data position, resume
mid-epoch, checkpoint and log cadence, epoch-length checks and the data-wait timing, with no Ray and no model.

A micro-batch is ``(epoch, index)``; the step function records the groups it gets and reports 2 samples a
micro-batch; the hooks record what they see and may "kill" the run after a step.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rgpt4d_core.train.checkpoint import DataPosition
from rgpt4d_core.train.loop import Cadence, LoopPlan, ShortEpochError, StepDone, TrainingLoop

MicroBatch = tuple[int, int]


class Killed(RuntimeError):
    pass


class Job:
    """Stream, step function and hooks of a fake job; ``length`` micro-batches per epoch in the stream."""

    def __init__(self, length: int, kill_after_step: int | None = None) -> None:
        self.length, self.kill_after_step = length, kill_after_step
        self.groups: list[list[MicroBatch]] = []
        self.steps: list[StepDone] = []
        self.saved: list[DataPosition] = []
        self.pulled = 0

    def micro_batches(self, start: DataPosition) -> Iterator[MicroBatch]:
        for i in range(self.length):
            self.pulled += 1
            yield (start.epoch, i)

    def step(self, group: list[MicroBatch], epoch: int) -> dict[str, float]:
        assert all(e == epoch for e, _ in group)
        self.groups.append(list(group))
        return {"loss": float(len(self.groups)), "samples": 2.0 * len(group)}

    def on_step(self, done: StepDone) -> None:
        self.steps.append(done)

    def save(self, done: StepDone) -> None:
        self.saved.append(done.position)
        if done.step == self.kill_after_step:
            raise Killed(f"after step {done.step}")

    def loop(self, plan: LoopPlan, cadence: Cadence = Cadence()) -> TrainingLoop[MicroBatch]:
        return TrainingLoop(plan, cadence, self.micro_batches, self.step, self)


PLAN = LoopPlan(total_steps=5, accumulation=2, micro_batches_per_epoch=4)  # 2 steps an epoch, the last in epoch 2


def test_steps_take_accumulation_micro_batches_and_roll_over_at_the_epoch_length() -> None:
    job = Job(length=6)  # the stream has more than the epoch length: the rest is never asked for
    end = job.loop(PLAN).run(DataPosition())

    assert job.groups == [[(0, 0), (0, 1)], [(0, 2), (0, 3)], [(1, 0), (1, 1)], [(1, 2), (1, 3)], [(2, 0), (2, 1)]]
    assert [d.position for d in job.steps] == [
        DataPosition(0, 2, 1, 4), DataPosition(1, 0, 2, 8), DataPosition(1, 2, 3, 12), DataPosition(2, 0, 4, 16),
        DataPosition(2, 2, 5, 20),
    ]  # fmt: skip
    assert [d.end_of_epoch for d in job.steps] == [False, True, False, True, False]
    assert [d.final for d in job.steps] == [False] * 4 + [True]
    assert end == DataPosition(2, 2, 5, 20)  # where the last step left the stream
    assert job.pulled == 4 + 4 + 2  # never a micro-batch past the epoch length or the last step


def test_checkpoints_every_n_steps_at_epoch_ends_and_after_the_last_step() -> None:
    job = Job(length=4)
    job.loop(PLAN, Cadence(checkpoint_every_steps=3)).run(DataPosition())
    assert [p.optimizer_step for p in job.saved] == [2, 3, 4, 5]
    assert [d.checkpoint_due for d in job.steps] == [False, True, True, True, True]

    job = Job(length=4)
    job.loop(PLAN, Cadence(checkpoint_every_steps=0, checkpoint_at_epoch_end=False)).run(DataPosition())
    assert job.saved == [DataPosition(2, 2, 5, 20)]  # only the final one


def test_metrics_are_due_every_n_steps_and_at_the_last() -> None:
    job = Job(length=4)
    job.loop(PLAN, Cadence(log_every_steps=2)).run(DataPosition())
    assert [d.step for d in job.steps if d.log_due] == [2, 4, 5]
    assert [d.metrics["loss"] for d in job.steps] == [1.0, 2.0, 3.0, 4.0, 5.0]
    job = Job(length=4)
    job.loop(PLAN, Cadence(log_every_steps=0)).run(DataPosition())
    assert all(d.log_due for d in job.steps)


@pytest.mark.parametrize("kill_after", [1, 2, 3, 4])
def test_a_killed_run_resumes_from_its_last_checkpoint_and_does_exactly_the_clean_runs_steps(kill_after: int) -> None:
    clean = Job(length=4)
    clean.loop(PLAN, Cadence(checkpoint_every_steps=1)).run(DataPosition())

    killed = Job(length=4, kill_after_step=kill_after)
    with pytest.raises(Killed):
        killed.loop(PLAN, Cadence(checkpoint_every_steps=1)).run(DataPosition())
    resumed = Job(length=4)
    resumed.loop(PLAN, Cadence(checkpoint_every_steps=1)).run(killed.saved[-1])

    assert killed.groups + resumed.groups == clean.groups
    assert [d.position for d in killed.steps + resumed.steps] == [d.position for d in clean.steps]
    assert resumed.steps[0].step == kill_after + 1 and resumed.steps[-1].final


def test_resume_mid_epoch_skips_the_consumed_micro_batches_and_counts_their_wait() -> None:
    ticks = iter(range(1000))
    job = Job(length=4)
    loop = TrainingLoop(PLAN, Cadence(), job.micro_batches, job.step, job, clock=lambda: float(next(ticks)))
    loop.run(DataPosition(1, 2, 3, 12))  # after step 3: (1, 0) and (1, 1) were consumed
    assert job.groups == [[(1, 2), (1, 3)], [(2, 0), (2, 1)]]
    assert [d.step for d in job.steps] == [4, 5] and job.steps[-1].position == DataPosition(2, 2, 5, 20)
    # every clock read is one tick: the first step waited on 4 next() calls (2 skipped), the second on 2
    assert [d.data_wait_s for d in job.steps] == [4.0, 2.0]


def test_data_wait_is_the_time_blocked_in_next_and_wall_the_time_between_steps() -> None:
    now = [0.0]

    class SlowJob(Job):
        def micro_batches(self, start: DataPosition) -> Iterator[MicroBatch]:
            for item in super().micro_batches(start):
                now[0] += 1.5  # waiting for data
                yield item

        def step(self, group: list[MicroBatch], epoch: int) -> dict[str, float]:
            now[0] += 10.0  # computing
            return super().step(group, epoch)

    job = SlowJob(length=4)
    TrainingLoop(PLAN, Cadence(), job.micro_batches, job.step, job, clock=lambda: now[0]).run(DataPosition())
    assert [d.data_wait_s for d in job.steps] == [3.0] * 5
    assert [d.wall_s for d in job.steps] == [13.0] * 5


def test_an_epoch_of_unknown_length_ends_with_its_iterator_and_drops_a_partial_group() -> None:
    job = Job(length=5)  # 2 full groups of 2, then one micro-batch left over
    plan = LoopPlan(total_steps=3, accumulation=2)
    end = job.loop(plan).run(DataPosition())
    assert job.groups == [[(0, 0), (0, 1)], [(0, 2), (0, 3)], [(1, 0), (1, 1)]]
    assert [d.end_of_epoch for d in job.steps] == [False] * 3  # not known before the iterator ends
    assert end == DataPosition(1, 2, 3, 12)


def test_an_epoch_shorter_than_the_plan_or_than_one_step_fails() -> None:
    with pytest.raises(ShortEpochError, match="epoch 0 yielded 3 micro-batches, expected 4"):
        Job(length=3).loop(PLAN).run(DataPosition())
    with pytest.raises(ShortEpochError, match="fewer than one optimiser step"):
        Job(length=1).loop(LoopPlan(total_steps=3, accumulation=2)).run(DataPosition())


def test_plan_epoch_length_must_be_a_multiple_of_the_accumulation() -> None:
    with pytest.raises(ValueError, match="multiple"):
        LoopPlan(total_steps=1, accumulation=2, micro_batches_per_epoch=3)
    with pytest.raises(ValueError, match="accumulation"):
        LoopPlan(total_steps=1, accumulation=0)


def test_a_run_already_at_its_last_step_does_nothing() -> None:
    job = Job(length=4)
    assert job.loop(PLAN).run(DataPosition(3, 0, 5, 20)) == DataPosition(3, 0, 5, 20)
    assert job.groups == [] and job.pulled == 0
