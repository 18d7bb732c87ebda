"""MLflowTracker against a real sqlite MLflow store and a real ``mlflow server`` on 127.0.0.1: one run per job,
re-attach by id, resume by job key."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from rgpt4d_core.tracking import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    JOB_KEY_TAG,
    MLflowTracker,
    NullTracker,
    Tracker,
    default_tracking_uri,
    git_sha,
    library_versions,
)
from tests.conftest import free_port, stop_process

SERVER_START_TIMEOUT_S = 240  # a cold start takes ~20 s on a quiet 2-core machine, minutes under load


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_default_uri_is_sqlite_under_run_dir(tmp_path: Path) -> None:
    uri = default_tracking_uri(tmp_path / "run")
    assert uri == f"sqlite:///{(tmp_path / 'run').resolve()}/mlflow.db"
    with pytest.raises(ValueError, match="tracking_uri"):
        default_tracking_uri("s3://bucket/runs")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow server`` (sqlite backend, proxied artifacts) on a free port of 127.0.0.1; yields its URL."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [mlflow, "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination",
         str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}"
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, (
                f"mlflow server did not come up: {(root / 'server.log').read_text()[-2000:]}"
            )
            time.sleep(0.5)
        yield url
    finally:
        stop_process(proc)
        log.close()


def _one_run_per_job(uri: str, tmp_path: Path, experiment: str = "distill") -> None:
    """The distill job's tracking life cycle (driver run, rank-0 attach, export registered, failed attempt, re-submission)
    against ``uri``: exactly one run with everything in it."""
    key = f"{tmp_path}/job-a"
    params = {"optim.lr": 1e-5, "run.name": "job-a", "long": "x" * 7000}
    driver = MLflowTracker.start(uri, experiment, "job-a", key, params=params, tags={"git_sha": "abc"})
    assert isinstance(driver, Tracker)

    rank0 = MLflowTracker.attach(uri, driver.run_id)  # what rank 0 of each attempt does
    rank0.log_metrics({"loss/total": 2.0, "lr": 1e-5}, step=1)
    rank0.log_metrics({"loss/total": 1.0}, step=2)
    rank0.log_text("optim:\n  lr: 1e-5\n", "config/resolved.yaml")
    model_dir = tmp_path / "export"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    assert rank0.log_model_dir(model_dir, "model", f"rgpt4d-{experiment}") == "1"
    driver.set_terminated("FAILED")

    # re-submission of the same job: the same run is re-opened, params are not re-logged
    again = MLflowTracker.start(
        uri, experiment, "job-a", key, params={"optim.lr": 3e-4}, tags={"git_sha": "def"}
    )
    assert again.run_id == driver.run_id
    MLflowTracker.attach(uri, again.run_id).log_metrics({"loss/total": 0.5}, step=3)
    again.set_terminated("FINISHED")

    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    # a model-training experiment, so that the MLflow UI opens on runs, not on its GenAI (traces) view
    assert exp.tags.get(EXPERIMENT_KIND_TAG) == EXPERIMENT_KIND == "custom_model_development"
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["optim.lr"] == "1e-05"
    assert run.data.params["long"].endswith("[truncated]")
    assert run.data.tags["git_sha"] == "def" and run.data.tags[JOB_KEY_TAG] == key
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss/total")] == [2.0, 1.0, 0.5]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config", "model"} <= artifacts
    versions = client.search_model_versions(f"name='rgpt4d-{experiment}'")
    assert [v.run_id for v in versions] == [run.info.run_id]

    other = MLflowTracker.start(uri, experiment, "job-b", f"{tmp_path}/job-b")
    assert other.run_id != run.info.run_id


def test_driver_run_rank0_attach_and_resubmission_share_one_run(tmp_path: Path) -> None:
    _one_run_per_job(default_tracking_uri(tmp_path), tmp_path)
    assert (tmp_path / "artifacts").is_dir(), "sqlite runs keep artifacts next to the db, not in the CWD"


def test_the_same_life_cycle_against_an_mlflow_server(mlflow_server: str, tmp_path: Path) -> None:
    _one_run_per_job(mlflow_server, tmp_path, experiment="distill-on-server")
    assert not (tmp_path / "artifacts").exists(), (
        "a server run's artifacts go to the server, not next to the job"
    )


def test_an_experiment_made_before_the_kind_tag_gets_it_and_a_users_choice_stays(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    old = client.create_experiment("old", artifact_location=(tmp_path / "a").as_uri())
    chosen = client.create_experiment("chosen", artifact_location=(tmp_path / "b").as_uri(),
                                      tags={EXPERIMENT_KIND_TAG: "genai_development"})  # fmt: skip
    for name in ("old", "chosen"):
        MLflowTracker.start(uri, name, "job", f"{tmp_path}/{name}").set_terminated()
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_attach_to_missing_run_fails(tmp_path: Path) -> None:
    uri = default_tracking_uri(tmp_path)
    MLflowTracker.start(uri, "distill", "x", "k")
    with pytest.raises(ValueError, match="not found"):
        MLflowTracker.attach(uri, "0" * 32)


def test_null_tracker_and_tag_helpers(tmp_path: Path) -> None:
    null = NullTracker()
    assert isinstance(null, Tracker) and null.run_id is None
    null.log_metrics({"a": 1.0}, step=0)
    versions = library_versions()
    assert versions["version.torch"].startswith("2.") and versions["version.mlflow"] == "3.17.2"
    assert library_versions(("not-a-real-lib-xyz",)) == {"version.not-a-real-lib-xyz": "absent"}
    assert git_sha(tmp_path) == "unknown"
    sha = git_sha(Path(__file__).parent)
    assert len(sha.split("-")[0]) == 40


def test_a_jobs_run_is_started_with_its_config_and_closed_with_its_status(tmp_path: Path) -> None:
    """``pipelines/_tracking.py``: the driver-side start and close every tracked job uses."""
    import dataclasses

    from pipelines._tracking import closing_run, start_job_run

    @dataclasses.dataclass
    class Job:
        name: str = "j"
        steps: int = 3

    uri = default_tracking_uri(tmp_path)
    assert isinstance(start_job_run(Job(), False, uri, "e", "j", "k", {}), NullTracker)
    runs = {}
    for key, outcome in (("ok", None), ("failed", RuntimeError), ("killed", KeyboardInterrupt)):
        tracker = start_job_run(Job(), True, uri, "e", key, key, {"t": "v"}, config_artifact="config/job.yaml")
        with pytest.raises(outcome) if outcome else contextlib.nullcontext(), closing_run(tracker) as status:
            if outcome:
                raise outcome()
            status.value = "FINISHED"
        runs[key] = _client(uri).get_run(str(tracker.run_id))
    attached = MLflowTracker.attach(uri, str(runs["ok"].info.run_id))
    with closing_run(attached, close=False):
        pass
    assert {k: r.info.status for k, r in runs.items()} == {"ok": "FINISHED", "failed": "FAILED", "killed": "KILLED"}
    assert _client(uri).get_run(str(runs["ok"].info.run_id)).info.status == "FINISHED"
    ok = runs["ok"].data
    assert ok.params == {"name": "j", "steps": "3"} and ok.tags["t"] == "v" and "git_sha" in ok.tags
    assert "version.torch" in ok.tags
    assert (tmp_path / "artifacts").is_dir()
