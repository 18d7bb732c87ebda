"""P4D distillation on Ray Train V2: ``python pipelines/distill.py --config conf/distill/tiny.yaml key=value ...``.

Also runs as ``ray job submit --working-dir . -- python pipelines/distill.py --config ...`` against a cluster.

Driver (this process), before any worker starts:

1. load + validate the typed config (:class:`~rgpt4d_core.train.config.DistillJobConfig`);
2. open the shard manifest and check it against the expert spec the student expects (name, revision, shapes);
3. plan the optimiser steps from the question table's usable rows (the LR schedule needs the total);
4. create (or, for a re-submitted job, re-open) the job's single MLflow run and log params/tags/config;
5. when the loss standardises the targets, compute their statistics from the shards (:func:`target_norm`).

Then ``TorchTrainer.fit()`` runs :func:`pipelines._distill_worker.train_worker` on every worker (DDP/gloo on CPU,
FSDP2/NCCL on GPUs), with ``RunConfig(name, storage_path)`` + ``FailureConfig`` + ``ray.train.get_checkpoint()``
for fault tolerance and resume. At the end the driver logs the exported inference checkpoint (NVILA layout, no
perception decoder) to MLflow, registers it, and closes the run with the job's status.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

if __package__ in (None, ""):  # `python pipelines/<job>.py`: put this repository first on sys.path
    import _paths  # noqa: F401  (pipelines/_paths.py, found beside the script)

from pipelines._cli import job_from_args, job_parser
from pipelines._console import (
    TRAINING_JOB_LOG,
    add_engine_logs_flag,
    progress_wanted,
    start_ray,
    training_job_output,
)
from pipelines._distill_worker import ensure_cwd, train_worker  # imported before ray.init (see ensure_cwd)
from pipelines._paths import absolute
from pipelines._progress import mlflow_step_reader, polled
from pipelines._ray import RayTarget
from pipelines._tracking import closing_run, start_job_run
from pipelines._train_ingest import ordered_ingest
from rgpt4d_core import storage
from rgpt4d_core.config import to_yaml
from rgpt4d_core.losses import TargetNorm
from rgpt4d_core.shards import schema as S
from rgpt4d_core.shards.reader import ShardSet, open_shards
from rgpt4d_core.shards.target_stats import target_norm_from_shards
from rgpt4d_core.shards.usable import usable_mask
from rgpt4d_core.tracking import PARENT_RUN_TAG, NullTracker, Tracker, default_tracking_uri
from rgpt4d_core.train.compat import check_manifest, expected_expert_spec
from rgpt4d_core.train.config import DistillJobConfig
from rgpt4d_core.train.distill_only import one_row_per_clip
from rgpt4d_core.train.plan import StepPlan, plan_steps
from rgpt4d_core.train.step import loss_config

EXPORT_DIR = "export"
#: question rows per object-store block of the training dataset (≈ 2.5 MB)
QUESTION_BLOCK_ROWS = 8192


@dataclass(frozen=True)
class DistillResult:
    """What a finished job produced.

    Attributes:
        run_dir: ``<storage_path>/<name>`` (Ray Train's checkpoints live under it).
        checkpoint: URI/path of the last checkpoint (training state + ``export/``), or ``None``.
        export: path of the exported inference checkpoint inside it, or ``None``.
        metrics: rank 0's last reported metrics.
        mlflow_run_id: the job's MLflow run (``None`` if tracking is off).
        plan: the optimiser-step plan.
        model_version: registered model version (``None`` if not registered).
    """

    run_dir: str
    checkpoint: str | None
    export: str | None
    metrics: dict[str, Any]
    mlflow_run_id: str | None
    plan: StepPlan
    model_version: str | None


def run_dir_of(cfg: DistillJobConfig) -> str:
    return storage.join(cfg.run.storage_path, cfg.run.name)


def tracking_uri_of(cfg: DistillJobConfig) -> str:
    return cfg.mlflow.tracking_uri or default_tracking_uri(run_dir_of(cfg))


def _start_tracker(cfg: DistillJobConfig, shards: ShardSet, plan: StepPlan) -> Tracker:
    if not cfg.mlflow.enabled:
        return NullTracker()
    manifest = shards.manifest
    tags = {
        "shards.uri": cfg.data.shards,
        "shards.manifest_fingerprint": manifest_fingerprint(shards),
        "shards.schema_fingerprint": manifest.schema_fingerprint,
        "expert.name": manifest.expert_spec.name,
        "expert.revision": manifest.expert_spec.revision,
        "plan.total_steps": str(plan.total_steps),
    }
    if cfg.mlflow.parent_run_id:
        tags[PARENT_RUN_TAG] = cfg.mlflow.parent_run_id
    return start_job_run(cfg, True, tracking_uri_of(cfg), cfg.mlflow.experiment, cfg.run.name, run_dir_of(cfg), tags)


def manifest_fingerprint(shards: ShardSet) -> str:
    """sha256 of the manifest's canonical JSON (which files, rows, expert, schema): identifies the training data."""
    import hashlib

    return hashlib.sha256(shards.manifest.to_json().encode()).hexdigest()


def count_usable_rows(shards: ShardSet, split: str) -> int:
    """Ok questions of ``split`` (reads two small columns of every question file; the manifest counts all splits
    together)."""
    table = shards.read_table(S.QUESTIONS, columns=[S.STATUS, S.SPLIT])
    return int(table.filter(usable_mask(table, split)).num_rows)


def ray_target(cfg: DistillJobConfig) -> RayTarget:
    """The job's Ray: ``run.ray_address``, ``run.ray_num_cpus``, and ``run.forward_env`` as the job's runtime_env,
    which reaches every task and actor of the job (shard listing and reading, Train workers) when this job starts
    or attaches to Ray; a caller that initialised Ray itself must put them into its own ``ray.init(runtime_env=...)``."""
    return RayTarget.of_run(cfg.run)


def usable_questions(cfg: DistillJobConfig, shards: ShardSet) -> pa.Table:
    """Every usable row of ``data.split`` (training columns only, a few hundred bytes each), sorted by the dataset's
    question id (then sample id): what :func:`training_questions` and :func:`distill_only_questions` take from.
    Each worker joins its questions to their clips through its own
    :class:`~rgpt4d_core.shards.clip_store.ClipStore` (``pipelines/_distill_worker.py``), so a clip's frames and
    targets cross the network and are decoded once per cache residency, not once per question.

    The rows are read once, on the driver (≈ 300 B a row: the paper's 210k questions ≈ 60 MB); the same table gives
    the step plan and, through :func:`_dataset`, every worker's every epoch (reading them with Ray Data tasks per
    worker and epoch cost a task process start each time, ≈ 7 s an epoch on a busy 2-core node). The sort makes the
    training order a function of the questions themselves: which clips share a part file follows the order in which
    precompute's tasks finished (two precompute runs over the same videos grouped them differently, so two demo runs
    trained on differently ordered questions), and clip ids hash the videos' absolute paths (another output
    directory, another order). Question ids usually name their video first (the synthetic world's
    ``<scene>_<task>_<n>``), which keeps a clip's questions together for the clip cache."""
    columns = list(dict.fromkeys([*S.QUESTION_TRAIN_COLUMNS, S.SPLIT, S.QUESTION_ID, S.SAMPLE_ID]))
    table = shards.read_table(S.QUESTIONS, columns=columns)
    table = table.filter(usable_mask(table, cfg.data.split))
    return table.sort_by([(S.QUESTION_ID, "ascending"), (S.SAMPLE_ID, "ascending")])


def training_questions(cfg: DistillJobConfig, usable: pa.Table) -> pa.Table:
    """The job's supervised questions: the first ``data.max_samples`` rows of :func:`usable_questions` (all at 0)."""
    return usable.slice(0, cfg.data.max_samples) if cfg.data.max_samples > 0 else usable


def distill_only_questions(cfg: DistillJobConfig, usable: pa.Table) -> pa.Table | None:
    """One row per clip of :func:`usable_questions` (the first by question id; ``max_samples`` does not apply), the
    table ``data.distill_only_per_micro_batch`` draws from (``rgpt4d_core/train/distill_only.py``); ``None`` when
    that is 0. Handed to every worker with its config (≈ 300 B a clip)."""
    return one_row_per_clip(usable) if cfg.data.distill_only_per_micro_batch else None


def _dataset(questions: pa.Table) -> Any:
    """The Ray Dataset the workers read: ``questions`` in the object store, in blocks of :data:`QUESTION_BLOCK_ROWS`."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    rows = questions.num_rows
    return ray.data.from_arrow([questions.slice(i, QUESTION_BLOCK_ROWS) for i in range(0, rows, QUESTION_BLOCK_ROWS)]
                               or [questions])  # fmt: skip


def target_norm(cfg: DistillJobConfig, shards: ShardSet) -> TargetNorm | None:
    """The targets' statistics when the job's loss standardises them (``losses.normalize`` or a preset that does)
    and distils at all (P4D or region ED); ``None`` otherwise. Computed here, once per job, and handed to every
    worker."""
    loss = loss_config(cfg)
    if not (loss.normalize_targets and (loss.distills or cfg.losses.region)):
        return None
    return target_norm_from_shards(shards, cfg.data.split, loss.depth_eps)


def _worker_config(cfg: DistillJobConfig, shards: ShardSet, plan: StepPlan, tracker: Tracker,
                   norm: TargetNorm | None, distill_only: pa.Table | None) -> dict[str, Any]:  # fmt: skip
    return {
        "distill_only": distill_only,
        "target_norm": norm.to_json() if norm is not None else "",
        "config_yaml": to_yaml(cfg),
        "plan": plan.__dict__,
        "shards_root": shards.root,
        "manifest_json": shards.manifest.to_json(),
        "expert_spec": shards.manifest.expert,
        "tracking_uri": tracking_uri_of(cfg) if tracker.run_id else "",
        "mlflow_run_id": tracker.run_id or "",
    }


def with_absolute_paths(cfg: DistillJobConfig) -> DistillJobConfig:
    """``cfg`` with local relative paths (shards, storage, checkpoints) made absolute against the driver's CWD.

    Workers run elsewhere (other nodes, or a job's unpacked working directory), so they only ever see absolute
    paths or URIs.
    """

    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, shards=str(absolute(cfg.data.shards))),
        run=dataclasses.replace(cfg.run, storage_path=str(absolute(cfg.run.storage_path))),
        expert=dataclasses.replace(cfg.expert, checkpoint=absolute(cfg.expert.checkpoint)),
        student=dataclasses.replace(cfg.student, init_checkpoint=absolute(cfg.student.init_checkpoint)),
    )


def run(cfg: DistillJobConfig) -> DistillResult:
    """Run (or resume) the distillation job described by ``cfg``; returns its :class:`DistillResult`.

    Raises:
        ShardManifestError / ValueError: before any worker starts, for incomplete or mismatching shards and bad
            config values.
        ray.train.TrainingFailedError: if the workers failed more often than ``run.max_failures``.
    """
    cfg = with_absolute_paths(cfg)
    cfg.validate()
    shards = open_shards(cfg.data.shards)
    check_manifest(shards.manifest, expected_expert_spec(cfg), cfg)
    usable = usable_questions(cfg, shards)
    questions = training_questions(cfg, usable)
    plan = plan_steps(cfg, questions.num_rows)
    distill_only = distill_only_questions(cfg, usable)
    target = ray_target(cfg)
    start_ray(target, runtime_env=target.runtime_env())
    ensure_cwd()

    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    tracker = _start_tracker(cfg, shards, plan)
    norm = target_norm(cfg, shards)
    if norm is not None:
        tracker.log_text(norm.to_json(), "losses/target_norm.json")
    if distill_only is not None:
        tracker.set_tags({"data.distill_only_clips": str(distill_only.num_rows)})
    storage_fs = storage.filesystem_for(cfg.run.storage_path)[0] if storage.is_s3(cfg.run.storage_path) else None
    storage_path = storage.filesystem_for(cfg.run.storage_path)[1] if storage_fs is not None else cfg.run.storage_path
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=_worker_config(cfg, shards, plan, tracker, norm, distill_only),
        scaling_config=ScalingConfig(
            num_workers=cfg.scaling.num_workers,
            use_gpu=cfg.scaling.use_gpu,
            resources_per_worker=dict(cfg.scaling.resources_per_worker),
            placement_strategy=cfg.scaling.placement_strategy,
        ),
        torch_config=TorchConfig(backend="nccl" if cfg.scaling.use_gpu else "gloo"),
        datasets={"train": _dataset(questions)},
        dataset_config=ordered_ingest(),
        run_config=RunConfig(
            name=cfg.run.name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            failure_config=FailureConfig(max_failures=cfg.run.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.loop.num_checkpoints_to_keep),
        ),
    )
    started = time.perf_counter()
    with closing_run(tracker) as status:
        with polled(plan.total_steps, f"distill {cfg.run.name}", "step", enabled=progress_wanted() and bool(tracker.run_id),
                    poll=mlflow_step_reader(tracking_uri_of(cfg), str(tracker.run_id), "loss/total")):  # fmt: skip
            result = trainer.fit()
        status.value = "FINISHED" if result.error is None else "FAILED"
        if result.error is not None:
            raise result.error
        metrics = dict(result.metrics or {})
        checkpoint_path = result.checkpoint.path if result.checkpoint is not None else None
        export, version = _log_export(cfg, result.checkpoint, tracker)
        tracker.log_metrics({"job/wall_s": time.perf_counter() - started}, step=int(metrics.get("step", 0)))
        return DistillResult(
            run_dir=run_dir_of(cfg),
            checkpoint=checkpoint_path,
            export=export,
            metrics=metrics,
            mlflow_run_id=tracker.run_id,
            plan=plan,
            model_version=version,
        )


def _log_export(cfg: DistillJobConfig, checkpoint: Any, tracker: Tracker) -> tuple[str | None, str | None]:
    """Log ``export/`` of the final checkpoint as the job's model and register it (driver side)."""
    if checkpoint is None:
        return None, None
    export_uri = storage.join(checkpoint.path if "://" in checkpoint.path else checkpoint.path, EXPORT_DIR)
    with checkpoint.as_directory() as local:
        export_local = Path(local) / EXPORT_DIR
        if not export_local.is_dir():
            return None, None
        version = tracker.log_model_dir(export_local, "model", cfg.mlflow.registered_model_name or None)
    return export_uri, version


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__, "conf/distill/*.yaml", "loop.epochs=2")
    add_engine_logs_flag(parser, TRAINING_JOB_LOG)
    args = parser.parse_args(argv)
    cfg = job_from_args(DistillJobConfig, args)
    if cfg is None:
        return 0
    with training_job_output(cfg.run.storage_path, args.engine_logs):
        result = run(cfg)
    summary = {
        "run_dir": result.run_dir,
        "checkpoint": result.checkpoint,
        "export": result.export,
        "mlflow_run_id": result.mlflow_run_id,
        "model_version": result.model_version,
        "steps": result.metrics.get("step"),
        "metrics": {k: v for k, v in result.metrics.items() if isinstance(v, int | float)},
    }
    print("DISTILL_RESULT " + json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
