"""Builders for precompute tests: a tiny R4D-format dataset of real mp4 files (local or S3) and a slow expert.

The slow expert is a test plugin (``plugins: [precompute_testkit]``): importing this module registers
``slow_classical``, the classical expert with a fixed delay per clip, so a test can kill a job mid-run.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from rgpt4d_core import storage
from rgpt4d_core.experts.base import Expert, ExpertSpec, ExpertTargets
from rgpt4d_core.experts.registry import EXPERTS, ExpertConfig, build_expert
from rgpt4d_core.types import Clip
from rgpt4d_core.video.encode import encode_video


def moving_frames(seed: int, num_frames: int, size: int = 32) -> np.ndarray:
    """uint8 [T, size, size, 3]: a bright square moving over a smooth seeded background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    base = (80 + 60 * np.sin(xx / 5.0 + rng.uniform(0, 6))[..., None] * np.array([1.0, 0.6, 0.3])).astype(np.uint8)
    frames = np.repeat(base[None], num_frames, axis=0).copy()
    for t in range(num_frames):
        x = (2 + t) % (size - 8)
        frames[t, 8:16, x : x + 8] = (255, 255, 0)
    return frames


def video_bytes(seed: int, num_frames: int = 24, size: int = 32, fps: float = 12.0, codec: str = "libx264") -> bytes:
    buf = io.BytesIO()
    encode_video(moving_frames(seed, num_frames, size), fps, buf, codec=codec)
    return buf.getvalue()


def qa_line(qid: str, video: str, question: str = "Does <obj_1> move?", regions: Any = None) -> dict[str, Any]:
    return {
        "id": qid, "video": video, "som_image": None, "question": question,
        "options": ["yes", "no"], "answer": "yes", "task": "dynamic",
        "regions": regions if regions is not None else [{"obj_id": 1, "box": [0.1, 0.2, 0.5, 0.6], "label": "box"}],
        "duration_s": 2.0, "fps": 12.0, "scene_id": f"scene-{qid}",
    }  # fmt: skip


def make_dataset(root: str, num_videos: int, questions_per_video: int = 1, split: str = "train",
                 num_frames: int = 24) -> list[dict[str, Any]]:
    """Write ``<root>/videos/v{i}.mp4`` and ``<root>/questions/<split>.jsonl``; returns the QA lines."""
    lines = []
    for i in range(num_videos):
        rel = f"videos/v{i}.mp4"
        storage.write_bytes(storage.join(root, rel), video_bytes(i, num_frames))
        for q in range(questions_per_video):
            lines.append(qa_line(f"{split}-{i}-{q}", rel))
    write_questions(root, split, lines)
    return lines


def write_questions(root: str, split: str, lines: Sequence[dict[str, Any] | str]) -> None:
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n"
    storage.write_bytes(storage.join(root, "questions", f"{split}.jsonl"), text.encode())


class SlowExpert:
    """The classical expert plus ``delay_s`` per clip (to kill a job while it runs)."""

    delay_s = 0.4

    def __init__(self, inner: Expert) -> None:
        self.inner = inner

    @property
    def spec(self) -> ExpertSpec:
        return self.inner.spec

    @property
    def heads(self) -> None:
        return None

    def encode(self, clips: Sequence[Clip]) -> list[ExpertTargets]:
        time.sleep(self.delay_s * len(clips))
        return self.inner.encode(clips)


def _build_slow(cfg: ExpertConfig) -> Expert:
    return SlowExpert(build_expert(ExpertConfig(name="classical", preset="res64", device="cpu")))  # type: ignore[return-value]


EXPERTS.setdefault("slow_classical", _build_slow)
