"""The per-worker training loop of ``pipelines/distill.py`` (runs inside Ray Train V2 worker processes).

Wiring only: the student, loss, collate, optimiser, DDP / FSDP2 wrapping (``parallel.py``), the loop (``loop.py``:
accumulation, data position, checkpoint cadence) and the checkpoint format come from ``rgpt4d_core.train``; this
file adds Ray Train's dataset shard, context, checkpoint and report calls, MLflow and fault injection.

Data position and resume: each worker consumes exactly ``plan.micro_batches_per_epoch`` micro-batches of its
equal share of *question* rows per epoch (every worker reads the whole question stream in order through the same
local shuffle buffer, seeded per epoch: ``data.shuffle_buffer``, and keeps every ``world``-th row of it, so the
split is the same in every run), and joins each micro-batch to
its clips through a per-worker :class:`~rgpt4d_core.shards.clip_store.ClipStore` of ``data.clip_cache_mb``; with
``data.distill_only_per_micro_batch`` each micro-batch also takes the rows the driver's distillation-only table and
:class:`~rgpt4d_core.train.distill_only.DistillOnlySchedule` give its (step, micro-batch, rank). A checkpoint records the
epoch and how many micro-batches of it were consumed; a restarted worker group replays the epoch's stream and
skips that many, so a run with failures does exactly as many optimiser steps as a clean one.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
import torch.distributed as dist
from torch import nn

from pipelines._train_ingest import rows_of_rank
from rgpt4d_core.config import from_yaml
from rgpt4d_core.experts.base import ExpertSpec
from rgpt4d_core.inputs import InputSpec
from rgpt4d_core.losses import TargetNorm
from rgpt4d_core.shards.clip_store import ClipStore
from rgpt4d_core.shards.manifest import Manifest
from rgpt4d_core.shards.reader import ShardSet, TrainingBatch
from rgpt4d_core.tracking import MLflowTracker, NullTracker, Tracker
from rgpt4d_core.train.checkpoint import (
    DataPosition,
    capture_training_state,
    resume_training_state,
    save_training_state,
)
from rgpt4d_core.train.config import DistillJobConfig
from rgpt4d_core.train.distill import (
    DistillSetup,
    build_setup,
    export_inference_checkpoint,
    trained_input_spec,
    trained_model_id,
)
from rgpt4d_core.train.distill_only import DistillOnlySchedule
from rgpt4d_core.train.loop import Cadence, StepDone, TrainingLoop
from rgpt4d_core.train.meters import InputWait, SteadyRate
from rgpt4d_core.train.optim import build_optimizer, build_scheduler
from rgpt4d_core.train.parallel import all_reduce_stats, autocast, wrap_student
from rgpt4d_core.train.plan import StepPlan, shuffle_seed
from rgpt4d_core.train.step import StepStats, optimizer_step

EXPORT_DIR = "export"


class InjectedFailure(RuntimeError):
    """Raised by ``debug.fail_at_step`` (fault-injection tests)."""


def _save_checkpoint(
    model: nn.Module,
    setup: DistillSetup,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    position: DataPosition,
    wc: dict[str, Any],
    rank: int,
    directory: Path,
    export_as: str | None,
    sharded: bool,
) -> bool:
    """Write the training state on rank 0 (collective); with ``export_as`` (a model id, for the final
    checkpoint) also the inference export, recorded under that id."""
    extra = {"config_yaml": wc["config_yaml"], "plan": wc["plan"]}
    state = capture_training_state(model, optimizer, scheduler, position, extra)
    if rank != 0:
        return False
    save_training_state(directory, state)
    (directory / "config.yaml").write_text(wc["config_yaml"])
    if export_as is not None:
        student = setup.student  # plain / DDP: the live module holds the full weights
        if sharded:  # FSDP2: rebuild on the meta device and take the gathered full weights
            with torch.device("meta"):
                student = type(student)(student.cfg, student.expert_spec)
            student.load_state_dict(state.model, assign=True)
            student.llm.tie_weights()
        spec = _input_spec(wc, setup.student.cfg.vision.image_size)
        export_inference_checkpoint(
            student, setup.tokenizer, directory / EXPORT_DIR, model_id=export_as, input_spec=spec
        )
    return True


def _input_spec(wc: dict[str, Any], image_size: int) -> InputSpec:
    """The input spec the student trained on: the shards' frames per clip, its vision side, the job's prompt."""
    cfg = from_yaml(DistillJobConfig, wc["config_yaml"])
    sampling = Manifest.from_json(wc["manifest_json"]).sampling
    frames = int(sampling.get("num_frames") or ExpertSpec.from_dict(wc["expert_spec"]).num_frames)
    return trained_input_spec(cfg, frames, image_size)


def ensure_cwd() -> None:
    """Leave an unpacked Ray ``--working-dir`` as the CWD if it is one (or if it is already gone).

    Under ``ray job submit`` the driver and workers start inside ``<session>/runtime_resources/working_dir_files/
    _ray_pkg_*``. Each node's runtime-env agent owns that directory and may delete or re-install it (seen when two
    nodes on one machine shared a temp dir, tests/test_job_submit.py); MLflow and transformers then fail in
    ``os.getcwd()``. Every path the job uses is absolute by now, so the temp directory is a safe CWD."""
    import os

    try:
        cwd = os.getcwd()
    except FileNotFoundError:
        cwd = ""
    if not cwd or "runtime_resources" in cwd:  # gone, or an unpacked Ray working_dir that may go at any time
        os.chdir(tempfile.gettempdir())


def train_worker(wc: dict[str, Any]) -> None:
    """Ray Train entry point; ``wc`` is built by ``pipelines.distill._worker_config``."""
    ensure_cwd()
    import ray.train
    import ray.train.torch

    cfg = from_yaml(DistillJobConfig, wc["config_yaml"])
    plan = StepPlan(**wc["plan"])
    store = ClipStore(ShardSet(wc["shards_root"], Manifest.from_json(wc["manifest_json"])), cfg.data.clip_cache_mb << 20)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if cfg.loop.torch_threads > 0:
        torch.set_num_threads(cfg.loop.torch_threads)
    device = ray.train.torch.get_device()

    norm = TargetNorm.from_json(wc["target_norm"]) if wc.get("target_norm") else None
    setup = build_setup(cfg, ExpertSpec.from_dict(wc["expert_spec"]), device, norm)
    model = wrap_student(setup.student, cfg.scaling, device, world)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, plan.total_steps)
    checkpoint = ray.train.get_checkpoint()
    position = _restore(checkpoint, model, optimizer, scheduler)
    worker = _Worker(wc, cfg, plan, rank, world, device, setup, model, optimizer, scheduler, store)
    worker.distill_only = wc.get("distill_only")
    worker.resumed = checkpoint is not None
    worker.nodes = _worker_nodes(world)
    worker.tracker = _attach_tracker(wc, rank, position.optimizer_step, worker.nodes)
    worker.train(ray.train.get_dataset_shard("train"), position)


def _restore(checkpoint: Any, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> DataPosition:
    """Load a Ray Train checkpoint (if any) into the model, optimiser, scheduler and RNGs; its data position."""
    if checkpoint is None:
        return DataPosition()
    with checkpoint.as_directory() as d:
        return resume_training_state(d, model, optimizer, scheduler).position


def _attach_tracker(wc: dict[str, Any], rank: int, start_step: int, nodes: list[str]) -> Tracker:
    """Rank 0 re-attaches to the driver's MLflow run (recording where this attempt starts); others track nothing."""
    if rank != 0 or not wc["mlflow_run_id"]:
        return NullTracker()
    tracker = MLflowTracker.attach(wc["tracking_uri"], wc["mlflow_run_id"])
    tracker.log_metrics({"attempt/start_step": float(start_step)}, step=start_step)
    tracker.set_tags({"ray.worker_nodes": ",".join(nodes)})
    return tracker


class _Worker:
    """One rank's adapter to :class:`~rgpt4d_core.train.loop.TrainingLoop`: its micro-batches (its rows of the Ray
    Data stream), its step (collate, bf16 loss, optimiser step, metrics reduced over ranks) and the hooks (MLflow,
    fault injection, Ray Train checkpoint reports)."""

    def __init__(self, wc: dict[str, Any], cfg: DistillJobConfig, plan: StepPlan, rank: int, world: int,
                 device: torch.device, setup: DistillSetup, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Any, store: ClipStore) -> None:  # fmt: skip
        self.wc, self.cfg, self.plan, self.rank, self.world, self.device = wc, cfg, plan, rank, world, device
        self.setup, self.model, self.optimizer, self.scheduler, self.store = setup, model, optimizer, scheduler, store
        self.resumed = False
        #: one question row per clip of the split, for ``data.distill_only_per_micro_batch`` (``None``: off)
        self.distill_only: pa.Table | None = None
        self.steps_done = 0
        self.nodes: list[str] = []
        self.tracker: Tracker = NullTracker()
        self.steady = SteadyRate()
        self.input = InputWait()
        self.last = time.perf_counter()

    def loss_fn(self, m: nn.Module, batch: Any) -> Any:
        with autocast(self.cfg.scaling, self.device):
            return self.setup.loss(m, batch)

    def train(self, shard: Any, position: DataPosition) -> None:
        """Epochs until ``plan.total_steps`` optimiser steps, starting at ``position``."""
        self.last = time.perf_counter()
        self.steady, self.input = SteadyRate(), InputWait()
        self.steps_done = position.optimizer_step
        loop = self.cfg.loop
        cadence = Cadence(log_every_steps=loop.log_every_steps, checkpoint_every_steps=loop.checkpoint_every_steps)
        batches = partial(self.batches, shard)
        TrainingLoop(self.plan.loop_plan(), cadence, batches, self.step, self).run(position)

    def batches(self, shard: Any, start: DataPosition) -> Iterator[pa.Table]:
        """The micro-batches of this rank in the epoch ``start.epoch``, from its beginning.

        Every rank reads the whole question stream in order through the same seeded shuffle buffer, in groups of
        ``micro_batch_size x world`` rows, and keeps its rows of each group (``pipelines/_train_ingest.py``).
        """
        cfg, world = self.cfg, self.world
        groups = shard.iter_batches(
            batch_size=cfg.loop.micro_batch_size * world,
            batch_format="pyarrow",
            drop_last=True,
            prefetch_batches=cfg.data.prefetch_batches,
            local_shuffle_buffer_size=cfg.data.shuffle_buffer or None,
            local_shuffle_seed=shuffle_seed(cfg.loop.seed, start.epoch) if cfg.data.shuffle_buffer else None,
        )
        for group in self.input.iterate(groups):  # the time blocked here is data/wait_fraction
            yield rows_of_rank(group, self.rank, world)

    def step(self, group: list[pa.Table], epoch: int) -> dict[str, float]:
        """One optimiser step over ``group`` (question tables joined to their clips, collated onto the device)."""
        with self.input.joining():  # clips joined and collated on this thread: data/join_fraction
            batches = [
                self.setup.prepare(self.store.batch(table), self.device, self.distill_only_rows(i))
                for i, table in enumerate(group)
            ]
        max_norm = self.cfg.optim.max_grad_norm
        stats = optimizer_step(self.model, batches, self.loss_fn, self.optimizer, self.scheduler, max_norm)
        self.steps_done += 1
        if self.cfg.debug.step_sleep_ms > 0:  # a slower step, simulated (bench/input_wait.py)
            time.sleep(self.cfg.debug.step_sleep_ms / 1e3)
        return self.metrics(stats, epoch)

    def distill_only_rows(self, micro_batch: int) -> TrainingBatch | None:
        """The distillation-only rows (joined to their clips) of micro-batch ``micro_batch`` of the coming step, or
        ``None`` when the job has none."""
        table = self.distill_only
        if table is None:
            return None
        schedule = DistillOnlySchedule(table.num_rows, self.cfg.data.distill_only_per_micro_batch,
                                       self.plan.accumulation, self.world, self.cfg.loop.seed)  # fmt: skip
        return self.store.batch(table.take(pa.array(schedule.indices(self.steps_done, micro_batch, self.rank))))

    def on_step(self, done: StepDone) -> None:
        """Log the step's metrics when due; inject the debug failure."""
        cfg = self.cfg
        if done.log_due:
            self.tracker.log_metrics(done.metrics, step=done.step)
        if cfg.debug.fail_at_step == done.step and self.rank == cfg.debug.fail_rank % self.world and not self.resumed:
            raise InjectedFailure(f"debug.fail_at_step={done.step}: injected failure on rank {self.rank}")

    def save(self, done: StepDone) -> None:
        """Report a checkpoint at ``done.position`` to Ray Train (with the inference export after the last step)."""
        args = (self.model, self.setup, self.optimizer, self.scheduler, done.position, self.wc, self.rank)
        _report(*args, done.metrics, done.step, done.final)

    def metrics(self, stats: StepStats, epoch: int) -> dict[str, float]:
        """The step's metrics: loss terms averaged over ranks, rates, learning rate, clip cache statistics, and this
        rank's input wait (``data/wait_fraction``: blocked on the Ray Data iterator; ``data/join_fraction``: joining
        clips and collating; per step window and, as ``data/steady_*``, since the first step)."""
        metrics = all_reduce_stats(stats, self.device, self.world)
        now = time.perf_counter()
        elapsed, self.last = now - self.last, now
        self.steady.add(metrics["samples"], metrics["tokens"], now)
        metrics.update(
            {
                "workers/num_nodes": float(len(set(self.nodes))),
                "lr": stats.lr,
                "grad_norm": stats.grad_norm,
                "epoch": float(epoch),
                "throughput/samples_per_s": metrics["samples"] / elapsed,
                "throughput/tokens_per_s": metrics["tokens"] / elapsed,
                **self.steady.rates(),
                "data/clip_cache_hit_rate": self.store.stats.hit_rate,
                "data/clip_row_groups_read": float(self.store.stats.row_groups_read),
                **self.input.lap(),
            }
        )
        return metrics


def _worker_nodes(world: int) -> list[str]:
    """Ray node id of every rank, in rank order (a collective)."""
    import ray

    mine = ray.get_runtime_context().get_node_id()
    if world == 1:
        return [mine]
    nodes: list[Any] = [None] * world
    dist.all_gather_object(nodes, mine)
    return [str(n) for n in nodes]


def _report(model, setup, optimizer, scheduler, position, wc, rank, metrics, step, final) -> None:  # type: ignore[no-untyped-def]
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = from_yaml(DistillJobConfig, wc["config_yaml"])
        sharded = cfg.scaling.resolved_strategy() == "fsdp"
        export_as = trained_model_id(cfg.run.name, position.optimizer_step) if final else None
        wrote = _save_checkpoint(model, setup, optimizer, scheduler, position, wc, rank, Path(tmp), export_as, sharded)
        ckpt = ray.train.Checkpoint.from_directory(tmp) if wrote else None
        ray.train.report({**metrics, "step": step}, checkpoint=ckpt)
