"""make_synthetic on the real local Ray cluster: parallel generation, resume, preview, and output to S3 (moto)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.make_synthetic import MakeSyntheticJob, generate, main, write_preview
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
