"""What the question builders of one scene share: :class:`QuestionContext` (scene, rendering, marks, a seeded
generator and the time grid questions are asked on) and the numeric option ladder that may decline a value.

Times are in seconds on a 0.5 s grid over the video; positions are in the ground frame of the first camera.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from rgpt4d_core.synth.marks import Mark
from rgpt4d_core.synth.options import numeric_options
from rgpt4d_core.synth.render import Rendering
from rgpt4d_core.synth.scenes import Scene


class QuestionContext:
    """Scene, rendering, marks and a seeded generator shared by the question builders of one scene."""

    def __init__(
        self, scene: Scene, rendering: Rendering, marks: list[Mark], rng: np.random.Generator,
        durations: tuple[float, ...] = (),
    ) -> None:
        self.scene, self.r, self.marks, self.rng = scene, rendering, marks, rng
        #: the video lengths (s) the world draws from (``scenes.duration_steps``); empty = unknown
        self.durations = durations
        last = (scene.num_frames - 1) / scene.fps
        self.grid = np.arange(0.0, last + 1e-9, 0.5)

    def frame(self, t: float) -> int:
        return int(round(t * self.scene.fps))

    def pick(self, items: list[Any]) -> Any:
        return items[int(self.rng.integers(len(items)))]

    def time(self) -> float:
        return float(self.pick(list(self.grid)))

    def interval(self, min_len: float = 1.0) -> tuple[float, float] | None:
        pairs = [(float(a), float(b)) for a in self.grid for b in self.grid if b - a >= min_len - 1e-9]
        return self.pick(pairs) if pairs else None

    def centre(self, mark: Mark, t: float) -> np.ndarray:
        return self.r.box_centers[self.frame(t), mark.index]

    def cam_point(self, mark: Mark, t: float) -> np.ndarray:
        """Object centre in the camera frame at time ``t`` (x right, y down, z forward)."""
        c2w = self.r.cam_to_world[self.frame(t)]
        return c2w[:3, :3].T @ (self.centre(mark, t) - c2w[:3, 3])

    def obj(self, mark: Mark) -> Any:
        return self.scene.objects[mark.index]

    def pick_class(self, classes: Sequence[str], present: Mapping[str, list[Any]]) -> str | None:
        """An answer class drawn uniformly from all ``classes`` (so that answers balance over the dataset), or
        ``None`` when this scene has no case of it (the builder then skips; :func:`make_questions` retries)."""
        key = self.pick(list(classes))
        return key if present.get(key) else None

    def prefer(self, good: Callable[[Mark], bool], p: float = 0.7) -> Mark:
        """A random mark, drawn from those satisfying ``good`` with probability ``p`` (when any does)."""
        pool = [m for m in self.marks if good(m)]
        return self.pick(pool if pool and self.rng.random() < p else self.marks)


def numeric_or_none(value: float, unit: str, rng: np.random.Generator) -> tuple[list[str], str] | None:
    """:func:`numeric_options`, or ``None`` (skip the question) when ``value`` is too small for a fair ladder."""
    try:
        return numeric_options(value, unit, rng)
    except RuntimeError:
        return None
