"""The per-worker loop of ``pipelines/pretrain_expert.py`` (runs inside Ray Train V2 worker processes).

Wiring only: model, loss and step come from ``rgpt4d_core.experts.l4p_training``, the optimiser and schedule from
``rgpt4d_core.train.optim``, the loop from ``rgpt4d_core.train.loop``; this file adds Ray Train's dataset shard,
DDP, and checkpoint reports in the training-state format of ``rgpt4d_core.train.checkpoint`` (the distillation's).

Data: every worker reads the whole example stream in order and keeps its rows of each group
(``pipelines/_train_ingest.py``), so that a run repeats bit for bit. Resume: an attempt restored from a checkpoint
continues at its optimiser step (weights, optimiser, schedule) with a fresh pass over the examples (epoch 0), as
this job always has.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from functools import partial
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch

from pipelines._train_ingest import rows_of_rank
from rgpt4d_core.config import from_yaml
from rgpt4d_core.experts.l4p import build_model, load_checkpoint_state
from rgpt4d_core.experts.l4p_training import init_output_priors, train_step
from rgpt4d_core.experts.pretrain_config import PretrainExpertJob
from rgpt4d_core.tracking import MLflowTracker
from rgpt4d_core.train.checkpoint import (
    DataPosition,
    capture_training_state,
    resume_training_state,
    save_training_state,
)
from rgpt4d_core.train.loop import Cadence, LoopPlan, ShortEpochError, StepDone, TrainingLoop
from rgpt4d_core.train.optim import build_optimizer, build_scheduler


def train_worker(config: dict[str, Any]) -> None:
    """Ray Train worker loop: DDP over ``L4PModel``, the loss and step of ``rgpt4d_core.experts.l4p_training``."""
    cfg = from_yaml(PretrainExpertJob, config["config_yaml"])
    torch.set_num_threads(max(1, cfg.loop.torch_threads))
    rank = ray.train.get_context().get_world_rank()
    model = build_model(cfg.preset, seed=cfg.loop.seed)
    if cfg.init_checkpoint:
        model.load_state_dict(load_checkpoint_state(cfg.init_checkpoint)[0])
    else:
        init_output_priors(model)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.loop.steps)
    step = 0
    resume = ray.train.get_checkpoint()
    if resume is not None:
        with resume.as_directory() as d:
            step = resume_training_state(d, model, optimizer, scheduler).position.optimizer_step
    ddp = ray.train.torch.prepare_model(model)
    tracker = MLflowTracker.attach(config["tracking_uri"], config["run_id"]) if rank == 0 and config["run_id"] else None
    world = ray.train.get_context().get_world_size()
    worker = _Pretrainer(cfg, config["config_yaml"], (rank, world), ddp, optimizer, scheduler, tracker)
    loop = cfg.loop
    cadence = Cadence(loop.log_every_steps, loop.checkpoint_every_steps, checkpoint_at_epoch_end=False)
    batches = partial(worker.batches, ray.train.get_dataset_shard("train"))
    try:  # an attempt starts a fresh pass over the examples (epoch 0) at the checkpoint's step
        TrainingLoop(LoopPlan(loop.steps), cadence, batches, worker.step, worker).run(DataPosition(optimizer_step=step))
    except ShortEpochError as exc:  # would loop forever: this worker's share cannot fill one batch
        raise ValueError(
            f"worker {rank}: its share of the training examples is smaller than loop.batch_size="
            f"{loop.batch_size}; use more scenes or windows, fewer workers, or a smaller batch ({exc})"
        ) from exc


class _Pretrainer:
    """One rank's adapter to :class:`~rgpt4d_core.train.loop.TrainingLoop`: its examples (Ray Data shard), the
    L4P step with seeded left-right flips, and the hooks (MLflow, Ray Train checkpoint reports)."""

    def __init__(self, cfg: PretrainExpertJob, config_yaml: str, rank_world: tuple[int, int], ddp: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, scheduler: Any, tracker: MLflowTracker | None) -> None:  # fmt: skip
        self.cfg, self.config_yaml, self.ddp, self.tracker = cfg, config_yaml, ddp, tracker
        self.rank, self.world = rank_world
        self.optimizer, self.scheduler = optimizer, scheduler
        self.flips = np.random.default_rng(cfg.loop.seed)

    def batches(self, shard: Any, start: DataPosition) -> Iterable[dict[str, np.ndarray]]:
        """The epoch ``start.epoch``'s batches of this worker (its rows of each ``batch_size x world`` group of the
        shared stream); seeds the epoch's flips (the same on every rank)."""
        seed = self.cfg.loop.seed
        self.flips = np.random.default_rng([seed, start.epoch, start.optimizer_step])
        groups = shard.iter_batches(batch_size=self.cfg.loop.batch_size * self.world, batch_format="numpy",
                                    drop_last=True, local_shuffle_buffer_size=64,
                                    local_shuffle_seed=seed + start.epoch)  # fmt: skip
        return (rows_of_rank(group, self.rank, self.world) for group in groups)

    def step(self, group: list[dict[str, np.ndarray]], epoch: int) -> dict[str, float]:
        """One optimiser step on the group's single batch (flipped with probability ``loop.flip_prob``)."""
        cfg = self.cfg
        (batch,) = group
        flip = bool(self.flips.random() < cfg.loop.flip_prob)
        losses = train_step(self.ddp, self.optimizer, batch, cfg.loss, flip=flip, max_grad_norm=cfg.optim.max_grad_norm)
        self.scheduler.step()
        return {f"train/{k}": v for k, v in losses.items()}

    def on_step(self, done: StepDone) -> None:
        if self.tracker is not None and done.log_due:
            self.tracker.log_metrics(done.metrics | {"train/lr": float(self.scheduler.get_last_lr()[0])}, done.step)

    def save(self, done: StepDone) -> None:
        """Report the checkpoint (the training state at ``done.position``, written by rank 0) to Ray Train."""
        extra = {"config_yaml": self.config_yaml, "preset": self.cfg.preset}
        state = capture_training_state(self.ddp, self.optimizer, self.scheduler, done.position, extra)  # collective
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if self.rank == 0:
                save_training_state(d, state)
                checkpoint = ray.train.Checkpoint.from_directory(d)
            ray.train.report({"step": done.step, **done.metrics}, checkpoint=checkpoint)
