"""``make demo``: the product end to end on the embedded default (grows stage by stage as the project does).

Stages so far:

1. ``stage_video``: write a small synthetic clip (two moving squares, H.264) into ``out/demo/``, decode 16
   uniformly sampled frames with their timestamps, and draw Set-of-Marks for two boxes onto frame 1.

Run: ``.venv/bin/python -m pipelines.demo [--out out/demo]``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from rgpt4d_core.regions import draw_set_of_marks, obj_token, region_from_box, validate_refs
from rgpt4d_core.types import Region
from rgpt4d_core.video.decode import DecodeConfig, decode_clip
from rgpt4d_core.video.encode import encode_video

FPS = 12.0
NUM_SOURCE_FRAMES, SIZE = 48, 128
SQUARE = 28


@dataclass(frozen=True)
class VideoStageResult:
    """What the video stage produced: the clip file, the Set-of-Marks PNG and the region prompts."""

    video: Path
    som_png: Path
    regions: tuple[Region, ...]


def _square_positions(i: int) -> list[tuple[int, int]]:
    """Top-left ``(x, y)`` pixels of the two squares in frame ``i``: one moves right, one moves down."""
    return [(8 + 2 * i, 16), (80, 8 + 2 * i)]


def synthetic_frames() -> np.ndarray:
    """uint8 ``[T, H, W, 3]``: two coloured squares moving over a gradient background."""
    ramp = np.linspace(30, 90, SIZE, dtype=np.float32)
    background = np.stack([np.add.outer(ramp, ramp) / 2] * 3, axis=-1).astype(np.uint8)
    frames = np.repeat(background[None], NUM_SOURCE_FRAMES, axis=0)
    for i in range(NUM_SOURCE_FRAMES):
        for (x, y), colour in zip(_square_positions(i), [(240, 200, 40), (60, 160, 240)], strict=True):
            frames[i, y : y + SQUARE, x : x + SQUARE] = colour
    return frames


def stage_video(out_dir: Path) -> VideoStageResult:
    """Encode the synthetic clip, decode 16 frames (+ timestamps), draw Set-of-Marks on frame 1."""
    out_dir.mkdir(parents=True, exist_ok=True)
    video = out_dir / "clip.mp4"
    encode_video(synthetic_frames(), FPS, video)
    clip = decode_clip(str(video), DecodeConfig(num_frames=16))
    print(f"decoded {video}: {clip.num_source_frames} source frames at {clip.fps:g} fps ({clip.duration_s:.2f} s)")
    print(f"  frames {clip.frames.dtype} {list(clip.frames.shape)}")
    for i, (idx, t) in enumerate(zip(clip.frame_indices, clip.timestamps_s, strict=True)):
        print(f"  sample {i:2d}: source frame {int(idx):2d}  t = {float(t):.3f} s")

    regions = tuple(
        region_from_box(k, (x / SIZE, y / SIZE, (x + SQUARE) / SIZE, (y + SQUARE) / SIZE), label=name)
        for k, ((x, y), name) in enumerate(zip(_square_positions(0), ["yellow", "blue"], strict=True), start=1)
    )
    question = f"Which moves faster, {obj_token(1)} or {obj_token(2)}?"
    validate_refs(question, regions)
    som = draw_set_of_marks(clip.frames[0], regions)
    som_png = out_dir / "som_frame1.png"
    if not cv2.imwrite(str(som_png), cv2.cvtColor(som, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {som_png}")
    print(f"question: {question}")
    return VideoStageResult(video=video, som_png=som_png, regions=regions)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="rgpt4d demo on the embedded default")
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output directory")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    video = stage_video(args.out)
    print(f"video:         {video.video}")
    print(f"set-of-marks:  {video.som_png}")
    print(f"demo done in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
