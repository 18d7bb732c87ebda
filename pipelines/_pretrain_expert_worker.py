"""The per-worker loop of ``pipelines/pretrain_expert.py`` (runs inside Ray Train V2 worker processes).

Wiring only: model, loss and step come from ``rgpt4d_core.experts.l4p_training``, the optimiser and schedule from
``rgpt4d_core.train.optim``; this file adds Ray Train's dataset shard, DDP, checkpoints, resume and reports.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch

from rgpt4d_core.config import from_yaml
from rgpt4d_core.experts.l4p import build_model, load_checkpoint_state, save_checkpoint
from rgpt4d_core.experts.l4p_training import init_output_priors, train_step
from rgpt4d_core.experts.pretrain_config import CHECKPOINT_FILE, STATE_FILE, PretrainExpertJob
from rgpt4d_core.tracking import MLflowTracker
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
            model.load_state_dict(load_checkpoint_state(Path(d) / CHECKPOINT_FILE)[0])
            state = torch.load(Path(d) / STATE_FILE, weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
    ddp = ray.train.torch.prepare_model(model)
    tracker = MLflowTracker.attach(config["tracking_uri"], config["run_id"]) if rank == 0 and config["run_id"] else None
    shard = ray.train.get_dataset_shard("train")
    epoch = 0
    while step < cfg.loop.steps:
        rng = np.random.default_rng([cfg.loop.seed, epoch, step])  # same flips on every rank
        step_at_epoch_start = step
        for batch in shard.iter_batches(batch_size=cfg.loop.batch_size, batch_format="numpy", drop_last=True,
                                        local_shuffle_buffer_size=64, local_shuffle_seed=cfg.loop.seed + epoch):  # fmt: skip
            losses = train_step(ddp, optimizer, batch, cfg.loss, flip=bool(rng.random() < cfg.loop.flip_prob),
                                max_grad_norm=cfg.optim.max_grad_norm)  # fmt: skip
            scheduler.step()
            step += 1
            if tracker is not None and (step % cfg.loop.log_every_steps == 0 or step == cfg.loop.steps):
                tracker.log_metrics({f"train/{k}": v for k, v in losses.items()} | {"train/lr": float(scheduler.get_last_lr()[0])}, step)
            if step % cfg.loop.checkpoint_every_steps == 0 or step == cfg.loop.steps:
                with tempfile.TemporaryDirectory() as d:
                    checkpoint = None
                    if rank == 0:
                        save_checkpoint(model, Path(d) / CHECKPOINT_FILE, cfg.preset)
                        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step},
                                   Path(d) / STATE_FILE)  # fmt: skip
                        checkpoint = ray.train.Checkpoint.from_directory(d)
                    ray.train.report({"step": step, **{f"train/{k}": v for k, v in losses.items()}}, checkpoint=checkpoint)
            if step >= cfg.loop.steps:
                break
        if step == step_at_epoch_start:  # would loop forever: this worker's share cannot fill one batch
            raise ValueError(
                f"worker {rank}: its share of the training examples is smaller than loop.batch_size="
                f"{cfg.loop.batch_size}; use more scenes or windows, fewer workers, or a smaller batch"
            )
        epoch += 1
