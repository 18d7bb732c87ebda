"""Synthetic clips with exact ground truth for the expert tests (rendered by the synthetic 4D world)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from rgpt4d_core.synth.config import SynthConfig
from rgpt4d_core.synth.render import Rendering, render_scene
from rgpt4d_core.synth.scenes import make_scene
from rgpt4d_core.types import Clip

SIZE = 64


@lru_cache(maxsize=8)
def rendering(index: int, size: int = SIZE, frames: int = 16) -> Rendering:
    """Scene ``index`` of a small world, rendered at ``size``² with at most ``frames`` source frames."""
    cfg = SynthConfig(seed=7, width=size, height=size, max_frames=frames, min_duration_s=2.0, max_duration_s=2.0,
                      min_objects=3, max_objects=4, dynamic_prob=0.8)  # fmt: skip
    return render_scene(make_scene(cfg, index))


def clip_of(r: Rendering, indices: np.ndarray, uri: str) -> Clip:
    """The clip of the rendering's frames ``indices``."""
    fps = float(1.0 / np.diff(r.timestamps_s).mean()) if len(r.timestamps_s) > 1 else 1.0
    return Clip(
        frames=r.rgb[indices],
        timestamps_s=r.timestamps_s[indices].astype(np.float64),
        frame_indices=indices.astype(np.int64),
        fps=fps,
        num_source_frames=int(r.rgb.shape[0]),
        uri=uri,
    )


def consecutive_clip(index: int, size: int = SIZE) -> tuple[Clip, Rendering]:
    """16 consecutive frames of scene ``index`` (so ground-truth flow applies between sampled frames)."""
    r = rendering(index, size)
    return clip_of(r, np.arange(16), f"synth-test://{index}"), r


def small_world(num_scenes: int = 4, size: int = SIZE) -> SynthConfig:
    """A small synthetic world (short videos at ``size``²) for on-disk tests."""
    return SynthConfig(seed=11, num_scenes=num_scenes, width=size, height=size, min_duration_s=2.0,
                       max_duration_s=3.0, fps_choices=(10, 12), min_objects=3, max_objects=4, dynamic_prob=0.8,
                       balance_answers=False)  # fmt: skip


def write_world(root: str, cfg: SynthConfig) -> list[str]:
    """Write the world's scenes (mp4 + ground truth) under ``root``; returns the video paths."""
    from rgpt4d_core.synth.writer import build_scene, write_scene

    paths = []
    for i in range(cfg.num_scenes):
        out = build_scene(cfg, i)
        write_scene(root, out)
        paths.append(f"{root}/videos/{out.scene_id}.mp4")
    return paths


def decoded_clip(video: str, num_frames: int = 16) -> Clip:
    """16 uniformly sampled frames of a written video, decoded as the product does."""
    from rgpt4d_core.video.decode import DecodeConfig, decode_clip

    return decode_clip(video, DecodeConfig(num_frames=num_frames))
