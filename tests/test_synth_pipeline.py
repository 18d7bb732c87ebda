"""make_synthetic on the real local Ray cluster: parallel generation, resume, preview, and output to S3 (moto)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines import make_synthetic
from pipelines.make_synthetic import (
    MakeSyntheticJob,
    WorldMismatchError,
    claim_world,
    generate,
    main,
    write_preview,
)
from rgpt4d_core.config import load
from rgpt4d_core.synth.writer import load_ground_truth, load_questions

ROOT = Path(__file__).resolve().parents[1]


def _job(out: str, *overrides: str) -> MakeSyntheticJob:
    return load(MakeSyntheticJob, [ROOT / "conf/synth/tiny.yaml"], [f"out={out}", *overrides])


@pytest.mark.usefixtures("ray_cluster")
def test_generates_in_parallel_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    job = _job(str(out), "synth.num_scenes=4", "synth.max_frames=12", "synth.width=48", "synth.height=48")
    first = generate(job, progress=False)
    assert (first["generated"], first["skipped"], first["failed"]) == (4, 0, 0)
    card = first["card"]
    assert sum(card["questions_per_task"].values()) == sum(card["questions_per_split"].values()) > 20
    questions = {s: (out / "questions" / f"{s}.jsonl").read_bytes() for s in ("train", "val", "test")}
    kept = out / "gt" / "s000001.npz"
    stamp = kept.stat().st_mtime_ns
    (out / "scenes" / "s000002.json").unlink()  # as if the run had been killed while writing scene 2
    (out / "videos" / "s000002.mp4").unlink()
    second = generate(job, progress=False)
    assert (second["generated"], second["skipped"], second["failed"]) == (1, 3, 0)
    assert (out / "videos" / "s000002.mp4").is_file()
    assert kept.stat().st_mtime_ns == stamp  # done scenes are not rewritten
    assert {s: (out / "questions" / f"{s}.jsonl").read_bytes() for s in questions} == questions
    third = generate(job, progress=False)
    assert (third["generated"], third["skipped"]) == (0, 4)
    png = Path(write_preview(job))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    w, h = Image.open(png).size
    assert w == 8 * 160 and h == 3 * 176 + 176  # 3 scene rows + the colour-wheel legend


@pytest.mark.usefixtures("ray_cluster")
def test_writes_to_s3(s3_bucket: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = f"{s3_bucket}/synth"
    rc = main(["--config", str(ROOT / "conf/synth/tiny.yaml"), "--out", out, "--no-progress", "synth.num_scenes=2",
               "synth.max_frames=10", "synth.width=32", "synth.height=32",
               "forward_env=[AWS_ENDPOINT_URL,AWS_ENDPOINT_URL_S3,AWS_DEFAULT_REGION,AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY]"])
    assert rc == 0, capsys.readouterr().err
    items = load_questions(out, "train")
    assert items and items[0].video.startswith("videos/")
    gt = load_ground_truth(f"{out}/{items[0].video}")
    assert gt.depth.shape[1:] == (32, 32) and np.all(gt.depth > 0)


def test_a_resume_never_mixes_generators_or_configurations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first run records its generator version and configuration; a resume by another one is refused (the CLI
    exits 2 naming the directory, before any scene is written), as is a directory of scenes with no record."""
    out = tmp_path / "ds"
    job = _job(str(out), "synth.num_scenes=4")
    claim_world(str(out), job.synth, set())
    claim_world(str(out), job.synth, {"s000000"})  # the same generator and config resume
    other = _job(str(out), "synth.num_scenes=4", "synth.seed=7").synth
    with pytest.raises(WorldMismatchError, match="another synth configuration"):
        claim_world(str(out), other, set())
    monkeypatch.setattr(make_synthetic, "GENERATOR_VERSION", "9.9.9")
    with pytest.raises(WorldMismatchError, match="written by generator 1"):
        claim_world(str(out), job.synth, set())
    monkeypatch.undo()
    assert main(["--config", str(ROOT / "conf/synth/tiny.yaml"), "--out", str(out), "synth.seed=7"]) == 2
    assert f"{out} was written by another synth configuration" in capsys.readouterr().err
    assert not (out / "scenes").exists()
    legacy = tmp_path / "legacy"
    (legacy / "scenes").mkdir(parents=True)
    (legacy / "scenes" / "s000000.json").write_text("{}")
    with pytest.raises(WorldMismatchError, match="no generator.json"):
        claim_world(str(legacy), job.synth, make_synthetic.done_scene_ids(str(legacy)))
