"""Synthetic shard sets for the distillation tests and benchmark: real shard files, real expert targets.

Each sample is a 16-frame 64×64 clip of a coloured square moving left or right over a textured background; the
question asks where region 1 moves, so the answer depends on the video. Targets come from the real ``l4p``
expert (preset ``l4p_tiny``, deterministic untrained weights) run on the same frames, written with the shard
codec and committed with a manifest exactly as ``precompute`` does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from rgpt4d_core.experts.registry import ExpertConfig, build_expert
from rgpt4d_core.shards import codec
from rgpt4d_core.shards import schema as S
from rgpt4d_core.shards.manifest import DATA_DIR, Counts, ShardFile, build_manifest, write_manifest
from rgpt4d_core.types import Clip, Region, VQAItem

FRAMES = 16
SIZE = 64
OPTIONS = ("left", "right", "up", "down")


RESULT_PREFIX = "DISTILL_RESULT "  # the summary line `python pipelines/distill.py` prints last


def distill_result(output: str) -> dict[str, Any] | None:
    """The JSON summary from the output of ``python pipelines/distill.py`` (``None`` if it printed none)."""
    line = next((ln for ln in output.splitlines() if ln.startswith(RESULT_PREFIX)), None)
    return None if line is None else json.loads(line[len(RESULT_PREFIX) :])


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


def write_shards(root: Path, num_samples: int = 16, seed: int = 0, files: int = 2) -> Path:
    """Write a complete shard set of ``num_samples`` ok rows under ``root`` (``files`` parquet files)."""
    expert = build_expert(ExpertConfig(name="l4p", preset="l4p_tiny", device="cpu"))
    spec = expert.spec
    shapes = S.tensor_shapes(spec)
    rng = np.random.default_rng(seed)
    rows = []
    clips = []
    sources = []
    for i in range(num_samples):
        direction = 1 if i % 2 == 0 else -1
        uri = f"synthetic://clip-{seed}-{i}.mp4"
        clip, region = _clip(rng, direction, uri)
        item = VQAItem(
            id=f"q{i}",
            video=uri,
            question="In which direction does <obj_1> move?",
            options=OPTIONS,
            answer="right" if direction > 0 else "left",
            task="dynamic/direction",
            regions=(region,),
            duration_s=clip.duration_s,
            fps=clip.fps,
        )
        clips.append(clip)
        sources.append(codec.SampleSource(item=item, split="train", scene_id=f"scene-{i}"))
    targets = expert.encode(clips)
    for src, clip, tgt in zip(sources, clips, targets, strict=True):
        rows.append(codec.encode_sample(src, spec, clip, tgt, shapes, image_format="png"))
    data = root / DATA_DIR
    data.mkdir(parents=True, exist_ok=True)
    written = []
    per_file = -(-len(rows) // files)
    for f in range(files):
        chunk = rows[f * per_file : (f + 1) * per_file]
        if not chunk:
            continue
        import pyarrow as pa

        table = pa.Table.from_pylist(chunk, schema=S.arrow_schema(shapes))
        path = data / f"part-{f:05d}.parquet"
        pq.write_table(table, path)
        written.append(ShardFile(path=f"{DATA_DIR}/{path.name}", rows=len(chunk), bytes=path.stat().st_size))
    counts = Counts(total=len(rows), ok=len(rows), error=0)
    manifest = build_manifest(spec, {"num_frames": FRAMES, "size": SIZE}, counts, written)
    write_manifest(str(root), manifest)
    return root
