"""Precompute job end to end on the session's local Ray cluster: real mp4 files, the tiny L4P expert, Parquet.

Covers: every column of every row of both tables (schema v2) against an independent decode + expert run, one
clip row per video, in both stage layouts (split and fused); the bad-input table; resume after a SIGKILL
(exactly once per clip and per question, partial files removed, a clip written without its questions
completed); S3 input and output on moto; manifest checks via the reader. The tests other than the first run in
the default (fused) layout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from precompute_testkit import make_dataset, qa_line, video_bytes, write_questions

from pipelines.precompute import PrecomputeJob, Summary, run
from rgpt4d_core import config as config_lib
from rgpt4d_core import storage
from rgpt4d_core.experts.registry import build_expert
from rgpt4d_core.shards import schema as S
from rgpt4d_core.shards.codec import make_clip_id, make_sample_id
from rgpt4d_core.shards.manifest import MANIFEST_NAME, ShardManifestError
from rgpt4d_core.shards.reader import open_shards, scan_written
from rgpt4d_core.shards.rows import decode_row
from rgpt4d_core.video.decode import decode_clip

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "conf" / "precompute" / "tiny.yaml")


def _job(dataset: str, out: str, *overrides: str) -> PrecomputeJob:
    base = [f"input.dataset_root={dataset}", f"output.uri={out}", "input.splits=[train]"]
    return config_lib.load(PrecomputeJob, [TINY], [*base, *overrides])


def _synthetic_world(root: str, num_scenes: int = 2) -> list[dict]:
    """A tiny world from the real synthetic writer (64x64, 2 s clips); returns its QA rows with their split."""
    from rgpt4d_core.synth.config import SynthConfig
    from rgpt4d_core.synth.writer import SPLITS, build_scene, finalize, write_scene

    cfg = SynthConfig(seed=0, num_scenes=num_scenes, width=64, height=64, fps_choices=(10, 12), min_duration_s=2.0,
                      max_duration_s=2.0, max_frames=24, min_objects=2, max_objects=3,
                      split_fractions=(0.5, 0.5, 0.0), balance_answers=False)  # fmt: skip
    for i in range(num_scenes):
        write_scene(root, build_scene(cfg, i))
    finalize(root, cfg)
    rows = []
    for split in SPLITS:
        for line in storage.read_bytes(storage.join(root, "questions", f"{split}.jsonl")).decode().splitlines():
            rows.append({**json.loads(line), "_split": split})
    return rows


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.parametrize("layout", [
    ("compute.fuse_stages=false", "output.clips_per_file=1"),  # decode tasks -> expert actors -> write tasks
    ("compute.fuse_stages=true", "output.clips_per_file=3", "compute.batch_size=1"),  # one actor call per part
], ids=["split", "fused"])  # fmt: skip
def test_end_to_end_every_column_matches_decode_and_expert(tmp_path: Path, layout: tuple[str, ...]) -> None:
    import torch

    torch.set_num_threads(1)
    data = str(tmp_path / "synth")
    qas = _synthetic_world(data)
    videos = {q["video"] for q in qas}
    assert len(videos) >= 2 and {q["_split"] for q in qas} >= {"train", "val"}
    job = _job(data, str(tmp_path / "shards"), *layout, "input.splits=[train,val,test]")
    summary = run(job)
    n = len(qas)
    assert (summary.videos, summary.records, summary.written_ok, summary.written_error) == (len(videos), n, n, 0)
    assert f"{n} samples ({n} ok, 0 error)" in summary.text() and 0 < summary.startup_s <= summary.wall_s

    shards = open_shards(job.output.uri)
    m = shards.manifest
    expert = build_expert(job.expert)
    assert m.expert_spec == expert.spec and m.counts.total == n and m.counts.error == 0
    assert m.sampling == job.sampling.to_dict() and len(m.git_sha) >= 7 and m.created_at
    clip_ids = shards.read_table(S.CLIPS, [S.CLIP_ID]).column(S.CLIP_ID).to_pylist()
    assert m.clip_counts.total == m.clip_counts.ok == len(videos) == len(set(clip_ids))  # each clip written once
    assert summary.clips_written == len(videos) and n > len(videos)
    table = shards.read_joined()
    rows = {r[S.QUESTION_ID]: r for r in table.to_pylist()}
    assert sorted(rows) == sorted(q["id"] for q in qas)
    assert len(set(table.column(S.SAMPLE_ID).to_pylist())) == n
    shapes = m.shapes()
    clips = {}
    for qa in qas:
        row = rows[qa["id"]]
        uri = storage.join(data, qa["video"])
        if uri not in clips:
            clip = decode_clip(uri, job.sampling.decode_config())
            clips[uri] = (clip, expert.encode([clip])[0])
        clip, targets = clips[uri]
        d = decode_row(row, shapes)
        assert d.status == S.STATUS_OK and d.error_reason is None
        cid = make_clip_id(uri, job.sampling.to_dict())
        assert d.clip_id == cid and d.sample_id == make_sample_id(cid, qa["id"])
        assert d.source.split == qa["_split"] and d.source.scene_id == qa["scene_id"]
        item = d.source.item
        assert (item.question, item.options, item.answer, item.task, item.som_image) == (
            qa["question"], tuple(qa["options"]), qa["answer"], qa["task"], qa["som_image"])
        assert [(r.obj_id, r.label) for r in item.regions] == [(r["obj_id"], r.get("label")) for r in qa["regions"]]
        for got_region, want_region in zip(item.regions, qa["regions"], strict=True):
            np.testing.assert_allclose(got_region.box, want_region["box"], rtol=1e-6)
        assert row[S.FRAMES_FORMAT] == "jpeg" and (row[S.FRAME_HEIGHT], row[S.FRAME_WIDTH]) == (64, 64)
        assert d.clip is not None and d.clip.frames.shape == clip.frames.shape == (16, 64, 64, 3)
        assert np.abs(d.clip.frames.astype(int) - clip.frames.astype(int)).mean() < 4.0  # JPEG q90
        np.testing.assert_array_equal(d.clip.frame_indices, clip.frame_indices)
        np.testing.assert_allclose(d.clip.timestamps_s, clip.timestamps_s)
        assert d.clip.num_source_frames == clip.num_source_frames and d.clip.fps == pytest.approx(clip.fps)
        assert row[S.DURATION_S] == pytest.approx(clip.duration_s)
        assert row[S.EXPERT_NAME] == "l4p" and row[S.EXPERT_REVISION] == expert.spec.revision
        for name in S.TENSOR_COLUMNS:
            want = getattr(targets, name)
            got = getattr(d.targets, name)
            assert got is not None and got.shape == want.shape and got.dtype == np.float16
            np.testing.assert_allclose(got.astype(np.float32), want, rtol=2e-3, atol=2e-3)

    # a second run has nothing to do and commits the same set
    again = run(job)
    assert (again.videos, again.skipped_written, again.total_rows) == (0, n, n)
    assert open_shards(job.output.uri).manifest.files == m.files


def test_an_actor_whose_expert_builds_to_another_spec_refuses_to_start() -> None:
    from pipelines.precompute import ExpertActor
    from rgpt4d_core.experts.registry import ExpertConfig

    cfg = ExpertConfig(name="l4p", preset="l4p_tiny", device="cpu")
    spec = build_expert(cfg).spec.to_dict()
    assert ExpertActor(cfg, [], 0, spec).expert.spec.to_dict() == spec
    with pytest.raises(RuntimeError, match="same file on every node"):
        ExpertActor(cfg, [], 0, {**spec, "revision": "0123456789abcdef"})


@pytest.mark.usefixtures("ray_cluster")
def test_bad_inputs_become_error_rows_and_good_samples_are_written(tmp_path: Path) -> None:
    data = tmp_path / "ds"
    lines = make_dataset(str(data), num_videos=2)
    good = video_bytes(0)
    bad_files = {
        "corrupt": np.random.default_rng(0).bytes(4000),  # seeded: these bytes probe as no container ("corrupt")
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "mpeg4": video_bytes(1, codec="mpeg4"),
        "oversize": video_bytes(2, size=128),
        "short": video_bytes(3, num_frames=5),
    }
    for name, blob in bad_files.items():
        (data / "videos" / f"{name}.mp4").write_bytes(blob)
        lines.append(qa_line(f"q-{name}", f"videos/{name}.mp4"))
    lines.append(qa_line("q-missing", "videos/not_there.mp4"))
    lines.append(qa_line("q-undefined", "videos/v0.mp4", question="Is <obj_1> left of <obj_3>?"))
    lines.append(qa_line("q-badbox", "videos/v1.mp4", regions=[{"obj_id": 1, "box": [0.5, 0.5, 0.2, 0.9]}]))
    lines.append(qa_line("q-dup", "videos/v1.mp4"))
    lines.append(qa_line("q-dup", "videos/v1.mp4"))
    missing_field = qa_line("q-noanswer", "videos/v1.mp4")
    del missing_field["answer"]
    write_questions(str(data), "train", [*lines, "{not json", missing_field])
    job = _job(str(data), str(tmp_path / "shards"), "sampling.allowed_codecs=[h264]",
               "sampling.max_pixels_per_frame=10000")  # fmt: skip
    summary = run(job)

    expected = {
        "decode:corrupt": 1, "decode:truncated": 1, "decode:empty": 1, "decode:unsupported_codec": 1,
        "decode:too_large": 1, "decode:too_few_frames": 1, "decode:missing": 1, "qa:undefined_region": 1,
        "qa:bad_region": 1, "qa:malformed": 2,
    }  # fmt: skip
    assert summary.errors_by_reason == expected
    assert summary.written_ok == 3 and summary.skipped_duplicate == 1  # v0, v1, q-dup (once)
    text = summary.text()
    for reason in expected:
        assert reason in text
    shards = open_shards(job.output.uri)
    assert shards.manifest.counts.errors_by_reason == expected
    rows = shards.read_joined().to_pylist()
    by_id = {r[S.QUESTION_ID]: r for r in rows}
    clip_errors = {k: v for k, v in expected.items() if k.startswith("decode:")}
    assert shards.manifest.clip_counts.errors_by_reason == clip_errors  # one error clip row per bad video
    assert shards.manifest.clip_counts.ok == 2  # v0 and v1, although several of their questions are bad
    assert by_id["q-undefined"][S.ERROR_MESSAGE].count("<obj_3>") == 1
    assert "not_there.mp4" in by_id["q-missing"][S.ERROR_MESSAGE]
    assert by_id["train.jsonl:" + str(len(lines) + 1)][S.ERROR_REASON] == "qa:malformed"
    for r in rows:  # a bad video's questions join an error clip without payload; a bad question keeps its clip
        if r[S.STATUS] == S.STATUS_ERROR and r[S.ERROR_REASON].startswith("decode:"):
            assert r[S.FRAMES] is None and all(r[c] is None for c in S.TENSOR_COLUMNS)
    assert by_id["q-undefined"][S.CLIP_ID] == by_id["train-0-0"][S.CLIP_ID] and by_id["q-undefined"][S.FRAMES]
    ok = [b for b in shards.iter_batches(batch_size=8)]
    assert sum(len(b) for b in ok) == 3


def _wait_for_files(root: str, n: int, proc: subprocess.Popen, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while len(scan_written(root).questions.files) < n:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace")[-4000:] if proc.stdout else ""
            raise AssertionError(f"job ended (rc={proc.returncode}) before {n} files were written:\n{out}")
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {n} question files after {timeout_s} s")
        time.sleep(0.2)


def _wait_until_job_is_gone(driver_pid: int, idle_cpus: float, timeout_s: float = 120) -> None:
    """Block until nothing of the killed driver's Ray job can still write a file.

    Two facts from the GCS, which Ray updates as it reaps a job: the job is marked dead, and the cluster's free
    CPUs are back to what they were before the job started, so no task or actor of it still holds a slot (every
    write happens inside a CPU-holding task or actor). Ray Data's detached zero-CPU bookkeeping actors
    (_StatsActor, ActorLocationTracker, _AutoscalingCoordinatorActor) outlive the job but never write a
    shard. Raises when that takes longer than ``timeout_s``.
    """
    import ray

    # the GCS tables; Ray's public state API needs the dashboard, which the test cluster does not run
    from ray._private import state

    deadline = time.monotonic() + timeout_s
    while True:
        jobs = [j for j in state.jobs() if j["DriverPid"] == driver_pid]
        job_ids = {j["JobID"] for j in jobs}
        dead = bool(jobs) and all(j["IsDead"] for j in jobs)
        free = ray.available_resources().get("CPU", 0.0)
        if dead and free >= idle_cpus:
            return
        if time.monotonic() > deadline:
            live = [a["ActorClassName"] for a in state.actors().values() if a["JobID"] in job_ids and a["State"] != "DEAD"]
            raise AssertionError(f"killed job still active: jobs={jobs} live actors={live} free CPUs {free} of {idle_cpus}")
        time.sleep(0.2)


@pytest.mark.usefixtures("ray_cluster")
def test_kill_and_resume_writes_every_clip_and_question_exactly_once(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    data, out = str(tmp_path / "ds"), str(tmp_path / "shards")
    lines = make_dataset(data, num_videos=6, questions_per_video=2)
    args = [f"input.dataset_root={data}", f"output.uri={out}", "input.splits=[train]", "expert.name=slow_classical",
            "plugins=[precompute_testkit]", "output.clips_per_file=1", "compute.batch_size=1",
            "forward_env=[PYTHONPATH]"]  # fmt: skip
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}  # fmt: skip
    cmd = [sys.executable, str(ROOT / "pipelines" / "precompute.py"), "--config", TINY, *args]
    idle_cpus = ray.available_resources().get("CPU", 0.0)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_files(out, 2, proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    _wait_until_job_is_gone(proc.pid, idle_cpus)
    assert not Path(out, MANIFEST_NAME).exists()
    with pytest.raises(ShardManifestError, match="incomplete"):
        open_shards(out)
    first = scan_written(out)
    assert 4 <= len(first.sample_ids) < len(lines)
    # a job killed between a part's clip file and its question file: drop one complete part's question file
    dropped = Path(out) / first.questions.files[0].path
    assert (Path(out) / S.CLIPS / dropped.name).exists()
    dropped.unlink()
    written_before = len(first.sample_ids) - first.questions.files[0].rows
    # a writer killed inside a file leaves a torn file behind: simulate one next to the complete ones
    complete = Path(out) / first.questions.files[1].path
    torn = complete.with_name("killed_mid_write-0.parquet")
    torn.write_bytes(complete.read_bytes()[: complete.stat().st_size // 2])

    # resume in this process (same config; the job's actors import the test plugin through PYTHONPATH)
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])
    resumed = run(config_lib.load(PrecomputeJob, [TINY], args))
    assert resumed.skipped_written == written_before and resumed.removed_partial_files == 1
    assert resumed.records == len(lines) - written_before
    assert resumed.clips_reused >= 1 and resumed.clips_written == 6 - len(first.clip_ids)
    assert not torn.exists()
    shards = open_shards(out)
    table = shards.read_table(S.QUESTIONS, [S.SAMPLE_ID, S.QUESTION_ID, S.STATUS])
    qids = table.column(S.QUESTION_ID).to_pylist()
    assert sorted(qids) == sorted(q["id"] for q in lines)  # every question exactly once
    assert len(set(table.column(S.SAMPLE_ID).to_pylist())) == len(lines)
    assert set(table.column(S.STATUS).to_pylist()) == {S.STATUS_OK}
    clip_ids = shards.read_table(S.CLIPS, [S.CLIP_ID]).column(S.CLIP_ID).to_pylist()
    assert len(clip_ids) == len(set(clip_ids)) == 6  # every clip exactly once
    assert sum(len(b) for b in shards.iter_batches(batch_size=5)) == len(lines)


@pytest.mark.usefixtures("ray_cluster")
def test_s3_videos_in_and_shards_out(s3_bucket: str, tmp_path: Path) -> None:
    data, out = f"{s3_bucket}/r4d", f"{s3_bucket}/shards/v2"
    make_dataset(data, num_videos=2)
    (tmp_path / "videos.txt").write_text(f"{data}/videos/v0.mp4\n{data}/videos/nope.mp4\n")
    job = _job(data, out, "expert.name=classical", "expert.preset=res64", f"input.video_list={tmp_path}/videos.txt",
               "forward_env=[AWS_ENDPOINT_URL,AWS_ENDPOINT_URL_S3,AWS_DEFAULT_REGION,AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY]")
    summary: Summary = run(job)
    assert (summary.written_ok, summary.errors_by_reason) == (3, {"decode:missing": 1})
    shards = open_shards(out)
    for table in (S.CLIPS, S.QUESTIONS):
        assert shards.file_uris(table) and all(u.startswith(f"{out}/{table}/") for u in shards.file_uris(table))
    manifest = json.loads(storage.read_bytes(f"{out}/{MANIFEST_NAME}"))
    assert manifest["counts"]["total"] == 4 and manifest["expert"]["name"] == "classical"
    assert manifest["clip_counts"]["total"] == 3  # v0 is in the QA and the video list: one clip row
    (batch,) = list(shards.iter_batches(batch_size=8))
    assert len(batch) == 3 and batch.targets[S.LATENTS] is None and batch.target(S.DYN_MASK).shape[0] == 3
    plain = [r for r in shards.read_table(S.QUESTIONS).to_pylist() if r[S.QUESTION_ID] == ""]
    assert len(plain) == 2 and {r[S.VIDEO_URI].rsplit("/", 1)[-1] for r in plain} == {"v0.mp4", "nope.mp4"}
