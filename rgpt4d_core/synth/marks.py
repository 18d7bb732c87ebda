"""The regions a question may name: objects visible on frame 1, numbered as the ``<obj_k>`` tokens of the text."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rgpt4d_core.synth.render import Rendering
from rgpt4d_core.synth.scenes import Scene


@dataclass(frozen=True)
class Mark:
    """A region shown on frame 1: ``obj_id`` (1-based, ``<obj_k>``), scene object index, normalised box, label."""

    obj_id: int
    index: int
    box: tuple[float, float, float, float]
    label: str

    @property
    def token(self) -> str:
        """The question-text token of this region, ``<obj_k>``."""
        return f"<obj_{self.obj_id}>"


def find_marks(
    scene: Scene,
    rendering: Rendering,
    min_fraction: float = 0.002,
    order_rng: np.random.Generator | None = None,
) -> list[Mark]:
    """Objects visible on frame 1 (at least ``min_fraction`` of the pixels, >= 12), numbered left to right, or in
    the random order ``order_rng`` draws (the dataset's choice: with left-to-right numbers, "is <obj_2> to the
    right of <obj_1>?" is answered by the numbers alone)."""
    inst = rendering.instance[0]
    h, w = inst.shape
    found = []
    for k, obj in enumerate(scene.objects):
        rows, cols = np.nonzero(inst == k + 1)
        if len(rows) >= max(12, min_fraction * h * w):
            box = (cols.min() / w, rows.min() / h, (cols.max() + 1) / w, (rows.max() + 1) / h)
            found.append((box, k, obj.label))
    found.sort(key=lambda b: (b[0][0] + b[0][2], b[1]))
    if order_rng is not None:
        found = [found[i] for i in order_rng.permutation(len(found))]
    marks = []
    for i, ((x0, y0, x1, y1), k, label) in enumerate(found):
        marks.append(
            Mark(
                i + 1,
                k,
                (round(float(x0), 4), round(float(y0), 4), round(float(x1), 4), round(float(y1), 4)),
                label,
            )
        )
    return marks
