"""The serve job's config: the overrides that conf/serve/tiny.yaml documents load and mean what they say."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.serve import ensure_checkpoint, load_job

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "conf" / "serve" / "tiny.yaml")


@pytest.mark.parametrize("override", ["bootstrap_preset=null", "bootstrap_preset="])
def test_switching_the_bootstrap_off_loads_and_writes_nothing(override: str, tmp_path: Path) -> None:
    # `bootstrap_preset=""` in a shell reaches the loader as `bootstrap_preset=`, which used to be a config error
    target = tmp_path / "final"
    job = load_job([TINY], [f"engine.checkpoint={target}", override])
    assert job.bootstrap_preset is None
    ensure_checkpoint(job)
    assert not target.exists()  # a missing trained checkpoint is not silently replaced by an untrained one


def test_the_documented_trained_checkpoint_override_is_the_one_tested_here() -> None:
    comment = next(line for line in Path(TINY).read_text().splitlines() if "Serve a trained checkpoint" in line)
    assert "bootstrap_preset=null" in comment and "engine.checkpoint=" in comment


@pytest.mark.parametrize("lean, direct", [(True, False), (False, True), (True, True), (False, False)])
def test_server_switches_ask_serve_for_their_env_and_nothing_else(lean: bool, direct: bool) -> None:
    from pipelines._serve_job import DIRECT_INGRESS_ENV, LEAN_SERVE_ENV, serve_env

    job = load_job([TINY], [f"server.lean_request_path={lean}", f"server.direct_ingress={direct}"])
    env = serve_env(job.server)
    expected = {**(LEAN_SERVE_ENV if lean else {}), **(DIRECT_INGRESS_ENV if direct else {})}
    assert env == expected and (env.get("RAY_SERVE_ENABLE_DIRECT_INGRESS") == "1") == direct
