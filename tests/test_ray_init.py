"""How a driver's runtime env meets the runtime env of the job it was submitted as (``pipelines/_ray.py``)."""

from __future__ import annotations

import json

import pytest

from pipelines._ray import job_runtime_env, without_job_settings


def test_the_submitted_jobs_settings_win_and_the_rest_is_kept() -> None:
    driver = {"env_vars": {"HF_HUB_OFFLINE": "1", "AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}, "pip": ["x"]}
    job = {"env_vars": {"HF_HUB_OFFLINE": "1", "NCCL_DEBUG": "WARN"}, "working_dir": "."}
    assert without_job_settings(driver, job) == {"env_vars": {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"},
                                                 "pip": ["x"]}  # fmt: skip
    assert without_job_settings(driver, {"env_vars": dict(driver["env_vars"]), "pip": []}) == {}
    assert without_job_settings(driver, {}) == driver


def test_job_runtime_env_is_read_from_the_job_runners_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert job_runtime_env() == {}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"env_vars": {"A": "1"}}}))
    assert job_runtime_env() == {"env_vars": {"A": "1"}}
