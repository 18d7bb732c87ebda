"""Experiment tracking behind a small protocol: :class:`MLflowTracker` (MLflow, imported lazily) or :class:`NullTracker`.

One training *job* owns exactly one MLflow run (stack-notes §5):

* the driver calls :meth:`MLflowTracker.start` once; it creates the run (or, when a job with the same
  ``job_key`` was submitted before, re-opens that run so a resumed job continues the same curves) and logs the
  params and tags;
* rank 0 of every Ray Train attempt calls :meth:`MLflowTracker.attach` with the run id: attaching never creates a
  run, so failed attempts and other ranks cannot leave stray ``RUNNING`` runs behind;
* the driver calls :meth:`set_terminated` when ``fit()`` returns or raises.

All logging goes through ``MlflowClient`` with an explicit run id (no process-global "active run"), so the same
object works in a driver, a Ray actor or a notebook. ``mlflow`` is imported only inside functions
(``tests/test_architecture.py`` enforces it): importing ``rgpt4d_core`` never pays MLflow's import cost.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

#: tag holding the identity of a job across submissions (``<storage_path>/<run name>``)
JOB_KEY_TAG = "rgpt4d.job_key"
#: MLflow's tag of a nested run: the id of its parent run (the UI shows the run under it)
PARENT_RUN_TAG = "mlflow.parentRunId"
#: MLflow 3's UI opens an experiment without this tag in its GenAI view (traces, judges); ours train models, so the
#: UI should open on runs, metrics and artifacts.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: libraries whose versions are recorded as ``version.<name>`` tags
TRACKED_LIBRARIES: tuple[str, ...] = ("torch", "ray", "mlflow", "transformers", "pyarrow", "numpy", "rgpt4d")
#: MLflow's limit on a param value (characters); longer values are truncated with a marker
_MAX_PARAM_CHARS = 6000


@runtime_checkable
class Tracker(Protocol):
    """Where a job records params, per-step metrics, tags and artifacts."""

    @property
    def run_id(self) -> str | None:
        """Identifier of the tracked run (``None`` for a tracker that records nothing)."""
        ...

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record immutable run parameters (e.g. the flattened resolved config)."""
        ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record scalar metrics at optimizer ``step``; non-finite values are logged as-is (MLflow keeps NaN)."""
        ...

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Record or overwrite string tags."""
        ...

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a local file or directory into the run's artifacts (under ``artifact_path``)."""
        ...

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store ``text`` as the artifact file ``artifact_file`` (e.g. ``"config/resolved.yaml"``)."""
        ...

    def log_model_dir(self, local_dir: str | Path, artifact_path: str, registered_name: str | None) -> str | None:
        """Log a checkpoint directory as a model; register it under ``registered_name`` if given.

        Returns the registered model version (as a string) or ``None`` when nothing was registered.
        """
        ...

    def set_terminated(self, status: str = "FINISHED") -> None:
        """Close the run with ``status`` in ``{"FINISHED", "FAILED", "KILLED"}``."""
        ...


class NullTracker:
    """A tracker that records nothing (library use, benchmarks, ranks other than 0)."""

    @property
    def run_id(self) -> str | None:
        return None

    def log_params(self, params: Mapping[str, Any]) -> None:
        return None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        return None

    def set_tags(self, tags: Mapping[str, str]) -> None:
        return None

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        return None

    def log_text(self, text: str, artifact_file: str) -> None:
        return None

    def log_model_dir(self, local_dir: str | Path, artifact_path: str, registered_name: str | None) -> str | None:
        return None

    def set_terminated(self, status: str = "FINISHED") -> None:
        return None


def default_tracking_uri(run_dir: str | Path) -> str:
    """``sqlite:///<abs run_dir>/mlflow.db`` (MLflow 3.17's file store raises; sqlite needs no server).

    Raises:
        ValueError: if ``run_dir`` is a URI (``s3://...``): a sqlite file must be on a local/mounted path, so set
            ``mlflow.tracking_uri`` explicitly (e.g. an ``http://`` MLflow server) for remote run directories.
    """
    text = str(run_dir)
    if "://" in text:
        raise ValueError(
            f"run directory {text!r} is not a local path; set mlflow.tracking_uri (an MLflow server URI) explicitly"
        )
    path = Path(text).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'mlflow.db'}"


def git_sha(repo_dir: str | Path = ".") -> str:
    """The commit of ``repo_dir`` (``"<sha>-dirty"`` with uncommitted changes), or ``"unknown"`` outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo_dir, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo_dir,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def library_versions(names: tuple[str, ...] = TRACKED_LIBRARIES) -> dict[str, str]:
    """``{"version.<lib>": "<version>"}`` for each installed library (``"absent"`` if not installed)."""
    out: dict[str, str] = {}
    for name in names:
        try:
            out[f"version.{name}"] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[f"version.{name}"] = "absent"
    return out


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= _MAX_PARAM_CHARS else text[: _MAX_PARAM_CHARS - 14] + "...[truncated]"


class MLflowTracker:
    """A tracker writing to one existing MLflow run through ``MlflowClient`` (see module docstring)."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self._run_id = run_id
        self._client = MlflowClient(tracking_uri=tracking_uri)

    @property
    def run_id(self) -> str:
        return self._run_id

    # -- lifecycle ------------------------------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        job_key: str,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        artifact_location: str | None = None,
    ) -> MLflowTracker:
        """Create the job's run on the driver, or re-open the newest run of an earlier submission of ``job_key``.

        Args:
            tracking_uri: ``sqlite:///...``, ``http://host:port`` or any MLflow tracking URI.
            experiment: experiment name (created if missing).
            run_name: display name of the run.
            job_key: identity of the job across submissions (``<storage_path>/<name>``); a run tagged with the same
                key is re-opened (status back to ``RUNNING``) instead of creating a second run.
            params: logged on creation only (MLflow params are immutable).
            tags: set on every start (git sha, fingerprints and versions may change between submissions).
            artifact_location: artifact root of a *new* experiment. With a sqlite URI and no value, artifacts go
                next to the database (``<db dir>/artifacts``), never into the current working directory.
        """
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is not None:
            experiment_id = exp.experiment_id
            if EXPERIMENT_KIND_TAG not in exp.tags:  # made by an older version: mark it, never override a choice
                client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        else:
            if artifact_location is None and tracking_uri.startswith("sqlite:///"):
                artifact_location = (Path(tracking_uri[len("sqlite:///") :]).parent / "artifacts").as_uri()
            experiment_id = client.create_experiment(experiment, artifact_location=artifact_location,
                                                     tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})  # fmt: skip
        escaped = job_key.replace("'", "\\'")
        previous = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{JOB_KEY_TAG}` = '{escaped}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if previous:
            run_id = previous[0].info.run_id
            client.update_run(run_id, status="RUNNING")
            tracker = cls(tracking_uri, run_id)
        else:
            run = client.create_run(experiment_id, run_name=run_name, tags={JOB_KEY_TAG: job_key})
            tracker = cls(tracking_uri, run.info.run_id)
            if params:
                tracker.log_params(params)
        if tags:
            tracker.set_tags(tags)
        return tracker

    @classmethod
    def attach(cls, tracking_uri: str, run_id: str) -> MLflowTracker:
        """Re-attach to an existing run by id (rank 0 of each attempt). Never creates a run.

        Raises:
            ValueError: if no run ``run_id`` exists at ``tracking_uri``.
        """
        tracker = cls(tracking_uri, run_id)
        try:
            tracker._client.get_run(run_id)
        except Exception as exc:  # MlflowException(RESOURCE_DOES_NOT_EXIST)
            raise ValueError(f"MLflow run {run_id!r} not found at {tracking_uri!r}: {exc}") from exc
        return tracker

    def set_terminated(self, status: str = "FINISHED") -> None:
        self._client.set_terminated(self._run_id, status=status)

    # -- logging --------------------------------------------------------------------------------------------------

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self._client.log_batch(self._run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(str(k), float(v), now, int(step)) for k, v in metrics.items()]
        if items:
            self._client.log_batch(self._run_id, metrics=items)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(str(k), str(v)) for k, v in tags.items()]
        if items:
            self._client.log_batch(self._run_id, tags=items)

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(local_path)
        if path.is_dir():
            self._client.log_artifacts(self._run_id, str(path), artifact_path)
        else:
            self._client.log_artifact(self._run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._client.log_text(self._run_id, text, artifact_file)

    def log_model_dir(self, local_dir: str | Path, artifact_path: str, registered_name: str | None) -> str | None:
        """Log ``local_dir`` (an inference checkpoint) under ``artifact_path`` and register it.

        The checkpoint files are stored verbatim (safetensors + JSON, loadable by ``rgpt4d_core.model.checkpoint``
        with no pickle involved); the registered model version's source is the run's artifact folder.
        """
        path = Path(local_dir)
        if not path.is_dir():
            raise ValueError(f"model directory {path} does not exist")
        self._client.log_artifacts(self._run_id, str(path), artifact_path)
        if not registered_name:
            return None
        from mlflow.exceptions import MlflowException

        try:
            self._client.create_registered_model(registered_name)
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise
        source = f"{self._client.get_run(self._run_id).info.artifact_uri}/{artifact_path}"
        version = self._client.create_model_version(registered_name, source=source, run_id=self._run_id)
        return str(version.version)
