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
