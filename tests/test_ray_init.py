"""How a driver's runtime env meets the runtime env of the job it was submitted as (``pipelines/_ray.py``)."""

from __future__ import annotations

import json

import pytest

from pipelines._ray import RayTarget, job_runtime_env, without_job_settings


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


def test_forwarded_env_carries_only_the_variables_the_driver_has(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RGPT4D_TEST_A", "1")
    monkeypatch.delenv("RGPT4D_TEST_B", raising=False)
    target = RayTarget(forward_env=("RGPT4D_TEST_A", "RGPT4D_TEST_B"))
    assert target.runtime_env() == {"env_vars": {"RGPT4D_TEST_A": "1"}}
    assert target.remote_args() == {"runtime_env": {"env_vars": {"RGPT4D_TEST_A": "1"}}}
    assert RayTarget(forward_env=("RGPT4D_TEST_B",)).remote_args() == {}  # nothing to forward: no runtime_env at all
