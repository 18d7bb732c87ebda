"""A job's one MLflow run on the driver: start it with the job's params, tags and resolved config, and close it with
the job's status (used by ``distill.py``, ``pretrain_expert.py`` and ``evaluate.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pipelines._paths import REPO
from rgpt4d_core.config import to_flat_dict, to_yaml
from rgpt4d_core.tracking import MLflowTracker, NullTracker, Tracker, git_sha, library_versions


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
