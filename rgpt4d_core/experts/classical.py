"""The ``classical`` expert: OpenCV DIS optical flow and a flow-derived motion mask, for any real video, on CPU.

For every pair of consecutive *sampled* frames ``(t-1, t)`` (converted to grey and resized to the dense size):

* ``flow_2d_backward[t]``: DIS flow computed from frame ``t`` to frame ``t-1`` — a pixel ``x`` of frame ``t`` is
  at ``x + flow(x)`` in frame ``t-1`` (pixels at the dense resolution); frame 0 is zeros;
* ``dyn_mask[t]``: how badly the pixel's flow disagrees with a single homography fitted (RANSAC) to the whole
  flow field, i.e. to the dominant (camera-induced) motion: ``sigmoid((residual - threshold) / softness)`` with
  the residual in pixels. A homography explains camera rotation exactly and camera translation only for a
  planar or distant scene, so strong parallax of near static objects can be flagged as motion — that is the
  honest limit of a flow-only motion mask. Frame 0 (no flow) copies frame 1's mask.

No depth, no latents, no heads, no camera rays. Deterministic (DIS and RANSAC are seeded).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from rgpt4d_core.experts.base import ExpertSpec, ExpertTargets
from rgpt4d_core.types import Clip

if TYPE_CHECKING:
    from rgpt4d_core.experts.config import ExpertConfig


@dataclass(frozen=True)
class ClassicalParams:
    """Tuning of the classical expert.

    Attributes:
        num_frames: frames per clip.
        size: ``(H, W)`` of the flow / mask maps.
        dis_preset: ``"fast"``, ``"medium"`` or ``"ultrafast"`` (OpenCV DIS presets).
        threshold_px: homography residual (pixels at ``size``) at which the motion probability is 0.5.
        softness_px: width of the sigmoid around the threshold.
        grid_step: spacing (pixels) of the flow samples the homography is fitted to.
    """

    num_frames: int = 16
    size: tuple[int, int] = (64, 64)
    dis_preset: str = "fast"
    threshold_px: float = 0.3
    softness_px: float = 0.1
    grid_step: int = 4


#: preset name -> dense resolution
RESOLUTIONS: dict[str, tuple[int, int]] = {"default": (64, 64), "res32": (32, 32), "res64": (64, 64),
                                           "res128": (128, 128), "res224": (224, 224)}  # fmt: skip
_DIS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def resolve_size(preset: str, input_size: Sequence[int] | None, expert: str) -> tuple[int, int]:
    """Dense size from ``expert.input_size`` (wins) or a resolution preset name."""
    if input_size is not None:
        if len(input_size) != 2 or min(input_size) < 8:
            raise ValueError(f"expert.input_size={list(input_size)} must be [H, W] with H, W >= 8")
        return int(input_size[0]), int(input_size[1])
    name = preset or "default"
    if name not in RESOLUTIONS:
        raise KeyError(f"unknown {expert} preset {name!r}; known presets: {', '.join(sorted(RESOLUTIONS))}")
    return RESOLUTIONS[name]


def _grey(frames: np.ndarray, size: tuple[int, int]) -> list[np.ndarray]:
    h, w = size
    out = []
    for f in frames:
        g = cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY)
        if g.shape != (h, w):
            g = cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA)
        out.append(g)
    return out


def homography_residual(flow: np.ndarray, grid_step: int) -> np.ndarray:
    """Per-pixel distance (pixels) between ``x + flow(x)`` and ``H x`` for the RANSAC homography ``H``.

    Args:
        flow: float32 ``[H, W, 2]`` backward flow in pixels.
        grid_step: sample spacing for the fit.

    Returns:
        float32 ``[H, W]``; all zeros if no homography can be fitted (too few / degenerate samples).
    """
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    src = np.stack([xs, ys], -1)
    dst = src + flow
    sub = (slice(grid_step // 2, None, grid_step), slice(grid_step // 2, None, grid_step))
    s, d = src[sub].reshape(-1, 2), dst[sub].reshape(-1, 2)
    if len(s) < 8:
        return np.zeros((h, w), np.float32)
    cv2.setRNGSeed(0)
    hom, _ = cv2.findHomography(s, d, cv2.RANSAC, ransacReprojThreshold=0.5, maxIters=500, confidence=0.99)
    if hom is None:
        return np.zeros((h, w), np.float32)
    pred = cv2.perspectiveTransform(src.reshape(-1, 1, 2), hom).reshape(h, w, 2)
    return np.linalg.norm(dst - pred, axis=-1).astype(np.float32)


class ClassicalExpert:
    """The ``classical`` expert (see module docstring); satisfies ``base.Expert``."""

    def __init__(self, params: ClassicalParams) -> None:
        if params.dis_preset not in _DIS:
            raise ValueError(f"dis_preset={params.dis_preset!r} unknown; choose one of {sorted(_DIS)}")
        self.params = params
        h, w = params.size
        self._spec = ExpertSpec(
            name="classical",
            revision=f"opencv-{cv2.__version__}-dis-{params.dis_preset}",
            num_frames=params.num_frames,
            input_size=params.size,
            dense_shape=(params.num_frames, h, w),
            targets=("flow_2d_backward", "dyn_mask"),
        )

    @classmethod
    def from_config(cls, cfg: ExpertConfig) -> ClassicalExpert:
        return cls(ClassicalParams(size=resolve_size(cfg.preset, cfg.input_size, "classical")))

    @property
    def spec(self) -> ExpertSpec:
        return self._spec

    @property
    def heads(self) -> None:
        return None

    def flow(self, frames: np.ndarray) -> np.ndarray:
        """Backward flow float32 ``[T, H, W, 2]`` (pixels at ``params.size``) of uint8 frames ``[T, h, w, 3]``."""
        p = self.params
        grey = _grey(frames, p.size)
        dis = cv2.DISOpticalFlow_create(_DIS[p.dis_preset])  # type: ignore[attr-defined]
        out = np.zeros((len(grey), *p.size, 2), np.float32)
        for t in range(1, len(grey)):
            out[t] = dis.calc(grey[t], grey[t - 1], None)
        return out

    def motion_mask(self, flow: np.ndarray) -> np.ndarray:
        """Motion probability float32 ``[T, H, W]`` in [0, 1] from backward flow ``[T, H, W, 2]``."""
        p = self.params
        mask = np.zeros(flow.shape[:3], np.float32)
        for t in range(1, flow.shape[0]):
            r = homography_residual(flow[t], p.grid_step)
            mask[t] = 1.0 / (1.0 + np.exp(-(r - p.threshold_px) / p.softness_px))
        if flow.shape[0] > 1:
            mask[0] = mask[1]
        return mask

    def encode(self, clips: Sequence[Clip]) -> list[ExpertTargets]:
        out = []
        for clip in clips:
            f = clip.frames
            if f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
                raise ValueError(f"clip {clip.uri!r}: frames must be uint8 [T, H, W, 3], got {f.dtype} {list(f.shape)}")
            if f.shape[0] != self.params.num_frames:
                raise ValueError(f"clip {clip.uri!r}: the expert takes {self.params.num_frames} frames, got {f.shape[0]}")
            flow = self.flow(f)
            out.append(ExpertTargets(flow_2d_backward=flow, dyn_mask=self.motion_mask(flow)))
        return out
