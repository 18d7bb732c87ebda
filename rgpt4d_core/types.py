"""Value types shared across modules. Frozen dataclasses; arrays are NumPy.

Conventions used everywhere in the project:

* frames are ``uint8`` RGB arrays shaped ``[T, H, W, 3]``;
* times are seconds (``float``), measured from the start of the video;
* boxes are normalised ``(x0, y0, x1, y1)`` in ``[0, 1]`` image coordinates of frame 1 (x right, y down);
* region ids are 1-based and map to the ``<obj_k>`` tokens in question text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Clip:
    """Uniformly sampled frames of one video.

    Attributes:
        frames: uint8 ``[T, H, W, 3]`` RGB.
        timestamps_s: float64 ``[T]``, presentation time of each sampled frame in seconds.
        frame_indices: int64 ``[T]``, index of each sampled frame in the source video.
        fps: average frames per second of the source stream.
        num_source_frames: number of frames in the source video.
        uri: where the video came from (path, ``s3://`` URI or ``"<bytes>"``).
    """

    frames: np.ndarray
    timestamps_s: np.ndarray
    frame_indices: np.ndarray
    fps: float
    num_source_frames: int
    uri: str

    @property
    def duration_s(self) -> float:
        """Duration of the source video in seconds (``num_source_frames / fps``)."""
        return float(self.num_source_frames / self.fps) if self.fps > 0 else 0.0


@dataclass(frozen=True)
class Region:
    """A region prompt on frame 1, referenced in text as ``<obj_{obj_id}>``.

    Attributes:
        obj_id: 1-based id; the Set-of-Marks label drawn on the frame.
        box: normalised ``(x0, y0, x1, y1)``; always present (derived from the mask when given one).
        mask: optional bool ``[H, W]`` mask at frame-1 resolution.
        label: optional class name shown next to the id (``"1:car"``).
    """

    obj_id: int
    box: tuple[float, float, float, float]
    mask: np.ndarray | None = None
    label: str | None = None


@dataclass(frozen=True)
class VQAItem:
    """One region-level multiple-choice question in R4D-Bench's format.

    ``answer`` is the correct option *string*; its letter is its index in ``options`` (A-E).
    """

    id: str
    video: str
    question: str
    options: tuple[str, ...]
    answer: str
    task: str
    som_image: str | None = None
    regions: tuple[Region, ...] = field(default_factory=tuple)
    duration_s: float | None = None
    fps: float | None = None

    @property
    def answer_letter(self) -> str:
        return "ABCDEFGH"[self.options.index(self.answer)]
