"""A job's one MLflow run on the driver: start it with the job's params, tags and resolved config, and close it with
the job's status (used by ``distill.py``, ``pretrain_expert.py`` and ``evaluate.py``); an experiment's parent run and
its nested children (``ablate.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pipelines._paths import REPO
from rgpt4d_core.config import to_flat_dict, to_yaml
from rgpt4d_core.tracking import (
    PARENT_RUN_TAG,
    MLflowTracker,
    NullTracker,
    Tracker,
    git_sha,
    library_versions,
)


def start_job_run(cfg: Any, enabled: bool, tracking_uri: str, experiment: str, run_name: str, job_key: str,
                  tags: dict[str, str], config_artifact: str = "config/resolved.yaml") -> Tracker:  # fmt: skip
    """The job's run (a :class:`NullTracker` when ``enabled`` is false): ``cfg`` flattened as params, ``tags`` between
    ``git_sha`` and the library versions, ``to_yaml(cfg)`` as the artifact ``config_artifact``. ``job_key``
    identifies the job: a re-submitted job re-opens its run (``MLflowTracker.start``)."""
    if not enabled:
        return NullTracker()
    tracker = MLflowTracker.start(tracking_uri, experiment, run_name=run_name, job_key=job_key,
                                  params=to_flat_dict(cfg), tags={"git_sha": git_sha(REPO), **tags, **library_versions()})  # fmt: skip
    tracker.log_text(to_yaml(cfg), config_artifact)
    return tracker


@dataclass
class RunStatus:
    """The status a run is closed with: ``FAILED`` until the job sets ``value`` (``FINISHED``)."""

    value: str = "FAILED"


@contextmanager
def closing_run(tracker: Tracker, close: bool = True) -> Iterator[RunStatus]:
    """Close ``tracker``'s run on leaving with the status the body set (``FAILED`` if it did not; ``KILLED`` on
    Ctrl-C). ``close=False`` leaves the run's status alone (a run attached to from another job belongs to it)."""
    status = RunStatus()
    try:
        yield status
    except KeyboardInterrupt:
        status.value = "KILLED"
        raise
    finally:
        if close:
            tracker.set_terminated(status.value)


def nest_under(tracking_uri: str, child_run_id: str | None, parent_run_id: str | None) -> bool:
    """Make ``child_run_id`` a child of ``parent_run_id`` (MLflow's ``mlflow.parentRunId`` tag) unless it already
    has a parent: a training reused by a later experiment stays under the experiment that trained it (the later
    one lists it in its own report and artifacts). Returns whether the child is now under ``parent_run_id``."""
    if not child_run_id or not parent_run_id:
        return False
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    current = client.get_run(child_run_id).data.tags.get(PARENT_RUN_TAG)
    if current is None:
        client.set_tag(child_run_id, PARENT_RUN_TAG, parent_run_id)
        return True
    return current == parent_run_id
