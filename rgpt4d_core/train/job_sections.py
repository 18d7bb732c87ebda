"""Config sections every Ray Train job shares (distillation, expert pretraining) and the MLflow fields every
tracked job shares (those two and evaluation): defined once here, extended by a job where it needs more.

A job picks its own defaults by building the section, e.g. ``field(default_factory=lambda: RunSection(name="x"))``;
the YAML keys (``run.*``, ``scaling.*``, ``mlflow.*``) are the same in every job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from rgpt4d_core import storage


@dataclass
class RunSection:
    """Where a training job runs and keeps its state. Attributes:
    name: the job's name; re-submitting a job with the same ``name`` and ``storage_path`` resumes it.
    storage_path: absolute directory or ``s3://`` URI holding checkpoints (and, by default, the MLflow db).
    ray_address: ``None`` = start a local Ray (or attach under ``ray job submit``); else passed to ``ray.init``.
    ray_num_cpus: logical CPUs of a locally started Ray (``None`` = all cores).
    max_failures: worker-group restarts Ray Train may do (``FailureConfig``); -1 = unlimited.
    forward_env: environment variables copied from the driver into the job's runtime_env when set (S3
        endpoint/region by default), so that the job's tasks and Train workers see them: workers of an already
        running cluster do not see the driver's environment. Credentials named here can be read by anyone with
        access to the cluster's dashboard; prefer credentials configured on the nodes.
    """

    name: str = "job"
    storage_path: str = MISSING
    ray_address: str | None = None
    ray_num_cpus: int | None = None
    max_failures: int = 1
    forward_env: list[str] = field(default_factory=lambda: list(storage.S3_ENV_VARS))


@dataclass
class WorkerScaling:
    """Ray Train's worker group. Attributes:
    num_workers: Ray Train workers (one per GPU on GPU clusters).
    resources_per_worker: Ray resources per worker; on a 2-CPU machine ``{"CPU": 0.5}`` leaves room for Ray Data
        (stack-notes §9.2), on GPU nodes e.g. ``{"CPU": 8, "GPU": 1}``.
    placement_strategy: Ray placement of the workers: ``"PACK"`` (fill nodes) or ``"SPREAD"`` (one per node first).
    """

    num_workers: int = 2
    resources_per_worker: dict[str, float] = field(default_factory=lambda: {"CPU": 0.5})
    placement_strategy: str = "PACK"


@dataclass
class MLflowSection:
    """Attributes:
    enabled: track the job in MLflow.
    tracking_uri: ``""`` = the job's own sqlite file (``sqlite:///<run dir>/mlflow.db`` for a training job); or an
        ``http://`` MLflow server.
    experiment: experiment name.
    """

    enabled: bool = True
    tracking_uri: str = ""
    experiment: str = "rgpt4d"
