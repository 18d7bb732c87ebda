"""Synthetic shard sets for the distillation tests and benchmark: real shard files, real expert targets.

Each sample is a 16-frame 64×64 clip of a coloured square moving left or right over a textured background; the
question asks where region 1 moves, so the answer depends on the video. Targets come from the real ``l4p``
expert (preset ``l4p_tiny``, deterministic untrained weights) run on the same frames, written with the shard
codec and committed with a manifest exactly as ``precompute`` does (schema v2: a clip table and a question table;
``questions_per_clip`` > 1 gives several questions about each clip, as in the paper's mixture).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rgpt4d_core.config import load
from rgpt4d_core.experts.registry import ExpertConfig, build_expert
from rgpt4d_core.shards import rows
from rgpt4d_core.shards import schema as S
from rgpt4d_core.shards.codec import make_clip_id
from rgpt4d_core.shards.commit import commit
from rgpt4d_core.shards.reader import scan_written
from rgpt4d_core.shards.writer import clip_rows_per_group, write_part
from rgpt4d_core.train.config import DistillJobConfig
from rgpt4d_core.types import Clip, Region, VQAItem

FRAMES = 16
SIZE = 64
OPTIONS = ("left", "right", "up", "down")


TINY_JOB = Path(__file__).resolve().parents[1] / "conf" / "distill" / "tiny.yaml"
RESULT_PREFIX = "DISTILL_RESULT "  # the summary line `python pipelines/distill.py` prints last


def distill_result(output: str) -> dict[str, Any] | None:
    """The JSON summary from the output of ``python pipelines/distill.py`` (``None`` if it printed none)."""
    line = next((ln for ln in output.splitlines() if ln.startswith(RESULT_PREFIX)), None)
    return None if line is None else json.loads(line[len(RESULT_PREFIX) :])


def tiny_job(shards: str, *overrides: str) -> DistillJobConfig:
    """``conf/distill/tiny.yaml`` on ``shards`` with ``overrides``, for in-process setups (no storage written)."""
    return load(DistillJobConfig, [TINY_JOB], [f"data.shards={shards}", "run.storage_path=/tmp/unused", *overrides])


def _clip(rng: np.random.Generator, direction: int, uri: str) -> tuple[Clip, Region]:
    background = rng.integers(0, 80, size=(SIZE, SIZE, 3), dtype=np.uint8)
    colour = rng.integers(120, 256, size=3, dtype=np.uint8)
    x0, y0, side = int(rng.integers(16, 32)), int(rng.integers(8, 40)), 12
    frames = np.repeat(background[None], FRAMES, axis=0)
    for t in range(FRAMES):
        x = int(np.clip(x0 + direction * t, 0, SIZE - side))
        frames[t, y0 : y0 + side, x : x + side] = colour
    fps = 8.0
    clip = Clip(
        frames=frames,
        timestamps_s=np.arange(FRAMES, dtype=np.float64) / fps,
        frame_indices=np.arange(FRAMES, dtype=np.int64),
        fps=fps,
        num_source_frames=FRAMES,
        uri=uri,
    )
    box = (x0 / SIZE, y0 / SIZE, (x0 + side) / SIZE, (y0 + side) / SIZE)
    return clip, Region(obj_id=1, box=box, label="square")


def write_shards(root: Path, num_samples: int = 16, seed: int = 0, files: int = 2, questions_per_clip: int = 1,
                 row_group_bytes: int = 8 << 20, reverse_clips: bool = False) -> Path:
    """Write a complete v2 shard set of ``num_samples`` ok questions under ``root`` (``files`` parts).

    Clip ``c`` gets questions ``c * questions_per_clip ...`` (the last clip may get fewer); questions about one
    clip differ in wording, not in answer. The expert runs once per clip. ``reverse_clips`` puts the same clips
    into the part files in reverse order (the same shard set's content, grouped as another precompute run might).
    """
    expert = build_expert(ExpertConfig(name="l4p", preset="l4p_tiny", device="cpu"))
    spec = expert.spec
    shapes = S.tensor_shapes(spec)
    sampling = {"num_frames": FRAMES, "size": SIZE}
    rng = np.random.default_rng(seed)
    num_clips = -(-num_samples // questions_per_clip)
    made = [_clip(rng, 1 if c % 2 == 0 else -1, f"synthetic://clip-{seed}-{c}.mp4") for c in range(num_clips)]
    targets = expert.encode([clip for clip, _ in made])
    clip_rows, question_rows = [], []
    for c, ((clip, region), tgt) in enumerate(zip(made, targets, strict=True)):
        cid = make_clip_id(clip.uri, sampling)
        clip_rows.append(rows.clip_row(cid, clip.uri, spec, clip, tgt, shapes, image_format="png"))
        qs = []
        for i in range(c * questions_per_clip, min(num_samples, (c + 1) * questions_per_clip)):
            wording = "" if i % questions_per_clip == 0 else f" (take {i % questions_per_clip})"
            item = VQAItem(id=f"q{i}", video=clip.uri, question=f"In which direction does <obj_1> move?{wording}",
                           options=OPTIONS, answer="right" if c % 2 == 0 else "left", task="dynamic/direction",
                           regions=(region,), duration_s=clip.duration_s, fps=clip.fps)  # fmt: skip
            qs.append(rows.question_row(rows.SampleSource(item=item, split="train", scene_id=f"scene-{c}"), cid))
        question_rows.append(qs)
    if reverse_clips:
        clip_rows, question_rows = clip_rows[::-1], question_rows[::-1]
    per_file = -(-num_clips // files)
    rows_per_group = clip_rows_per_group(row_group_bytes, S.tensor_nbytes(shapes) + FRAMES * SIZE * SIZE * 3)
    for f in range(files):
        lo, hi = f * per_file, min(num_clips, (f + 1) * per_file)
        if lo >= hi:
            continue
        write_part(str(root), pa.Table.from_pylist(clip_rows[lo:hi], schema=S.arrow_schema(S.CLIPS, shapes)),
                   pa.Table.from_pylist([q for qs in question_rows[lo:hi] for q in qs],
                                        schema=S.arrow_schema(S.QUESTIONS, shapes)), rows_per_group)  # fmt: skip
    commit(str(root), scan_written(str(root)), spec, sampling)
    return root
